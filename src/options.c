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
};

typedef struct {
  const char *name;
  int *value;
  int min, max;
} tm_knob;

static const tm_knob tm_knobs[] = {
    {"TIDE_ABORT_ON_ERROR", &tm_opt.abort_on_error, 0, 1},
    {"TIDE_PAGER", &tm_pager_opt.enabled, 0, 1},
    {"TIDE_PAGER_DELAY_MS", &tm_pager_opt.delay_ms, 0, 600000},
    {"TIDE_PAGER_IDLE_MS", &tm_pager_opt.idle_ms, 0, 600000},
    {"TIDE_SEGMENT_CACHE", &tm_opt.segment_cache, 0, 1024},
    {"TIDE_SHOW_STATS", &tm_opt.show_stats, 0, 1},
    {"TIDE_VERBOSE", &tm_opt.verbose, 0, 1},
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

static void tm_warn_value(const tm_knob *k, const char *value) {
  char storage[200];
  TM_LINE(line, storage);
  tm_line_add(&line, k->name);
  tm_line_add(&line, "=");
  tm_line_add_n(&line, value, 40);
  tm_line_add(&line, " is not an integer in ");
  tm_line_add_u64(&line, (uint64_t)k->min);
  tm_line_add(&line, "..");
  tm_line_add_u64(&line, (uint64_t)k->max);
  tm_line_add(&line, "; using the default ");
  tm_line_add_u64(&line, (uint64_t)*k->value);
  tm_warn(line.buf, NULL);
}

void tm_options_load(void) {
  static atomic_int loaded;
  if (!environ || atomic_exchange(&loaded, 1)) return;
  for (char **e = environ; *e; e++) {
    const char *var = *e;
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
    int v;
    if (tm_parse_int(eq + 1, knob->min, knob->max, &v))
      *knob->value = v;
    else
      tm_warn_value(knob, eq + 1);
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
    tm_line_add(&line, TIDE_DEBUG ? " debug=1\n" : "\n");
    tm_write_str(2, line.buf);
  }
}
