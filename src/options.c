/* TIDE_* environment variables (doc/knobs.md). Parsed once, without malloc:
 * at the first allocation if libc has set up environ by then, otherwise from
 * the library constructor. Bad values get a one-line warning and the default. */
#include "internal.h"

#include <string.h>

extern char **environ;

tm_options tm_opt = {
    .abort_on_error = 1,
    .segment_cache = 1,
    .show_stats = 0,
    .verbose = 0,
};

tm_pager_opts tm_pager_opt = {
    .enabled = 1,
    .delay_ms = 100,
    .idle_ms = 250,
    .psi = 1,
    .rss_limit = 0,
#if defined(TIDE_PAGER_MODE_FREE)
    .mode = TM_MODE_FREE,
#else
    .mode = TM_MODE_DONTNEED,
#endif
};

/* A knob: an integer in min..max, a size in bytes (with an optional K, M, G
 * or T suffix, powers of 1024), or one of a list of words. */
enum { TM_KNOB_INT, TM_KNOB_SIZE, TM_KNOB_CHOICE };
typedef struct {
  const char *name;
  unsigned kind;
  int *value;         /* INT, CHOICE (the index of the word) */
  size_t *size;       /* SIZE */
  int min, max;       /* INT */
  const char *const *words; /* CHOICE, NULL-terminated */
} tm_knob;

static const char *const tm_mode_words[] = {"dontneed", "free", NULL};

static const tm_knob tm_knobs[] = {
    {"TIDE_ABORT_ON_ERROR", TM_KNOB_INT, &tm_opt.abort_on_error, NULL, 0, 1, NULL},
    {"TIDE_PAGER", TM_KNOB_INT, &tm_pager_opt.enabled, NULL, 0, 1, NULL},
    {"TIDE_PAGER_DELAY_MS", TM_KNOB_INT, &tm_pager_opt.delay_ms, NULL, 0, 600000, NULL},
    {"TIDE_PAGER_IDLE_MS", TM_KNOB_INT, &tm_pager_opt.idle_ms, NULL, 0, 600000, NULL},
    {"TIDE_PAGER_MODE", TM_KNOB_CHOICE, &tm_pager_opt.mode, NULL, 0, 0, tm_mode_words},
    {"TIDE_PAGER_PSI", TM_KNOB_INT, &tm_pager_opt.psi, NULL, 0, 1, NULL},
    {"TIDE_RSS_LIMIT", TM_KNOB_SIZE, NULL, &tm_pager_opt.rss_limit, 0, 0, NULL},
    {"TIDE_SEGMENT_CACHE", TM_KNOB_INT, &tm_opt.segment_cache, NULL, 0, 1024, NULL},
    {"TIDE_SHOW_STATS", TM_KNOB_INT, &tm_opt.show_stats, NULL, 0, 1, NULL},
    {"TIDE_VERBOSE", TM_KNOB_INT, &tm_opt.verbose, NULL, 0, 1, NULL},
};

/* Variables of the same prefix that belong to the tools around the library
 * (tide-rss, the bench scripts): not knobs, and not worth a warning. */
static const char *const tm_tool_vars[] = {"TIDE_LIB", "TIDE_RSS"};

static bool tm_is_tool_var(const char *var, size_t len) {
  for (size_t i = 0; i < sizeof tm_tool_vars / sizeof tm_tool_vars[0]; i++)
    if (strlen(tm_tool_vars[i]) == len && strncmp(tm_tool_vars[i], var, len) == 0) return true;
  return false;
}

static bool tm_parse_int(const char *s, int min, int max, int *out) {
  long v = 0;
  if (!*s) return false;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return false;
    v = v * 10 + (*s - '0');
    if (v > max) return false;
  }
  if (v < min) return false;
  *out = (int)v;
  return true;
}

/* Digits, then at most one of K M G T (either case). */
static bool tm_parse_size(const char *s, size_t *out) {
  size_t v = 0;
  if (*s < '0' || *s > '9') return false;
  for (; *s >= '0' && *s <= '9'; s++) {
    if (v > (SIZE_MAX - 9) / 10) return false;
    v = v * 10 + (size_t)(*s - '0');
  }
  unsigned shift = 0;
  switch (*s) {
    case 0: break;
    case 'k': case 'K': shift = 10; break;
    case 'm': case 'M': shift = 20; break;
    case 'g': case 'G': shift = 30; break;
    case 't': case 'T': shift = 40; break;
    default: return false;
  }
  if (*s && s[1]) return false;
  if (shift && v > (SIZE_MAX >> shift)) return false;
  *out = v << shift;
  return true;
}

/* glibc reads MALLOC_PERTURB_ with atoi and keeps the low byte: leading
 * digits count, anything else is 0 (off). */
static int tm_parse_perturb(const char *s) {
  int v = 0;
  for (; *s >= '0' && *s <= '9'; s++) v = (v * 10 + (*s - '0')) & 0xffff;
  return v & 0xff;
}

static bool tm_parse_choice(const char *s, const char *const *words, int *out) {
  for (int i = 0; words[i]; i++)
    if (strcmp(s, words[i]) == 0) {
      *out = i;
      return true;
    }
  return false;
}

static void tm_warn_value(const tm_knob *k, const char *value) {
  char storage[240];
  TM_LINE(line, storage);
  tm_line_add(&line, k->name);
  tm_line_add(&line, "=");
  tm_line_add_n(&line, value, 40);
  if (k->kind == TM_KNOB_INT) {
    tm_line_add(&line, " is not an integer in ");
    tm_line_add_u64(&line, (uint64_t)k->min);
    tm_line_add(&line, "..");
    tm_line_add_u64(&line, (uint64_t)k->max);
    tm_line_add(&line, "; using the default ");
    tm_line_add_u64(&line, (uint64_t)*k->value);
  } else if (k->kind == TM_KNOB_SIZE) {
    tm_line_add(&line, " is not a size (digits, then K, M, G or T); using the default ");
    tm_line_add_u64(&line, (uint64_t)*k->size);
  } else {
    tm_line_add(&line, " is not one of");
    for (int i = 0; k->words[i]; i++) {
      tm_line_add(&line, " ");
      tm_line_add(&line, k->words[i]);
    }
    tm_line_add(&line, "; using the default ");
    tm_line_add(&line, k->words[*k->value]);
  }
  tm_warn(line.buf, NULL);
}

static bool tm_knob_set(const tm_knob *k, const char *value) {
  switch (k->kind) {
    case TM_KNOB_INT:
      return tm_parse_int(value, k->min, k->max, k->value);
    case TM_KNOB_SIZE:
      return tm_parse_size(value, k->size);
    default:
      return tm_parse_choice(value, k->words, k->value);
  }
}

void tm_options_load(void) {
  static atomic_int loaded;
  if (!environ || atomic_exchange(&loaded, 1)) return;
  for (char **e = environ; *e; e++) {
    const char *var = *e;
    if (strncmp(var, "MALLOC_PERTURB_=", 16) == 0) {
      tm_perturb_set(tm_parse_perturb(var + 16));
      continue;
    }
    if (strncmp(var, "TIDE_", 5) != 0) continue;
    const char *eq = strchr(var, '=');
    if (!eq) continue;
    size_t len = (size_t)(eq - var);
    const tm_knob *knob = NULL;
    for (size_t i = 0; i < sizeof tm_knobs / sizeof tm_knobs[0]; i++) {
      if (strlen(tm_knobs[i].name) == len && strncmp(tm_knobs[i].name, var, len) == 0) {
        knob = &tm_knobs[i];
        break;
      }
    }
    if (!knob && tm_is_tool_var(var, len)) continue;
    if (!knob) {
      char storage[64];
      TM_LINE(name, storage);
      tm_line_add_n(&name, var, len);
      tm_warn("unknown variable ignored: ", name.buf);
      continue;
    }
    if (!tm_knob_set(knob, eq + 1)) tm_warn_value(knob, eq + 1);
  }
  if (tm_opt.verbose) {
    char storage[160];
    TM_LINE(line, storage);
    tm_line_add(&line, "tidemalloc: version " TIDEMALLOC_VERSION " pager-mode=");
    tm_line_add(&line, tm_release_mode_name());
    tm_line_add(&line, " segment-cache=");
    tm_line_add_u64(&line, (uint64_t)tm_opt.segment_cache);
    tm_line_add(&line, " abort-on-error=");
    tm_line_add_u64(&line, (uint64_t)tm_opt.abort_on_error);
    tm_line_add(&line, " pager=");
    tm_line_add_u64(&line, (uint64_t)tm_pager_opt.enabled);
    tm_line_add(&line, " delay-ms=");
    tm_line_add_u64(&line, (uint64_t)tm_pager_opt.delay_ms);
    tm_line_add(&line, " rss-limit=");
    tm_line_add_u64(&line, (uint64_t)tm_pager_opt.rss_limit);
    tm_line_add(&line, TIDE_DEBUG ? " debug=1\n" : "\n");
    tm_write_str(2, line.buf);
  }
}
