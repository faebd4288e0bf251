/* The pager's readings of memory pressure and limits: the PSI trigger the
 * event loop waits on (pager/loop.c), the memory limits of the process's
 * cgroup and what the cgroup uses, and the process's resident size.
 *
 * This runs inside malloc and on the pager thread, which must never
 * allocate (pager/thread.c): so no stdio, no opendir, nothing that might
 * allocate behind our back. Files are read with open/read/close into stack
 * buffers of at most TM_LINE_MAX bytes and parsed here; there is no static
 * state at all, so any thread may call in at any time. Every public
 * function puts errno back as it found it: callers are malloc's callers.
 *
 * The cgroup readings are split into parsers that take text and a walk
 * that takes a directory prefix, so tests can feed them made-up
 * /proc/self/cgroup and mountinfo text and a cgroup tree in a temporary
 * directory (tests/test_pressure.c). */
#include "config.h"

#include "pager.h"
#include "pressure.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define TM_LINE_MAX 2048 /* longer lines are skipped: no cgroup line is that long */
/* Limits at or above this mean "none": cgroup v1 reports an unset limit as
 * the largest page multiple below 2^63 (9223372036854771712 with 4 KiB
 * pages), and no machine has 4 EiB to limit anyway. */
#define TM_CG_UNLIMITED (UINT64_C(1) << 62)
#define TM_NO_LIMIT UINT64_MAX
/* The kernel's bounds on a trigger window (kernel/sched/psi.c), and the
 * granularity it demands of unprivileged triggers. */
#define TM_PSI_UNPRIV_US 2000000u
#define TM_PSI_WINDOW_MAX_US 10000000u

/* ---- small file reading ---------------------------------------------------------- */
/* tm_read_small and the tm_sys_* calls (src/sysio.c): no cancellation point. */

typedef void (*tm_line_fn)(void *ctx, const char *line, size_t len);

/* Each line of a file, without its newline, through a buffer on the stack:
 * /proc/self/mountinfo can be tens of KiB in a container. A line longer
 * than the buffer (overlay mounts with many layers) is dropped whole. */
static bool tm_file_lines(const char *path, tm_line_fn fn, void *ctx) {
  int fd = tm_sys_open(path, O_RDONLY);
  if (fd < 0) return false;
  char buf[TM_LINE_MAX];
  size_t have = 0;
  bool skipping = false, ok = true;
  for (;;) {
    ssize_t n = tm_sys_read(fd, buf + have, sizeof buf - have);
    if (n <= 0) {
      ok = n == 0;
      break;
    }
    size_t end = have + (size_t)n, start = 0;
    const char *nl;
    while ((nl = memchr(buf + start, '\n', end - start)) != NULL) {
      size_t at = (size_t)(nl - buf);
      if (!skipping) fn(ctx, buf + start, at - start);
      skipping = false;
      start = at + 1;
    }
    have = end - start;
    if (have == sizeof buf) { /* no newline in a full buffer */
      skipping = true;
      have = 0;
    } else if (start > 0) {
      memmove(buf, buf + start, have);
    }
  }
  if (ok && have > 0 && !skipping) fn(ctx, buf, have); /* no newline at the end */
  tm_sys_close(fd);
  return ok;
}

/* The same over a string (tests). */
static void tm_text_lines(const char *text, tm_line_fn fn, void *ctx) {
  while (*text) {
    const char *nl = strchr(text, '\n');
    size_t len = nl ? (size_t)(nl - text) : strlen(text);
    fn(ctx, text, len);
    text += len + (nl != NULL);
  }
}

/* ---- small parsers ------------------------------------------------------------------ */
static bool tm_eq(const char *s, size_t len, const char *word) {
  return strlen(word) == len && memcmp(s, word, len) == 0;
}

/* Is word one of the sep-separated items of s[0..len)? ("rw,memory") */
static bool tm_has_item(const char *s, size_t len, char sep, const char *word) {
  const char *end = s + len;
  while (s < end) {
    const char *e = memchr(s, sep, (size_t)(end - s));
    if (!e) e = end;
    if (tm_eq(s, (size_t)(e - s), word)) return true;
    s = e + 1;
  }
  return false;
}

/* A decimal number at *s, skipping blanks before it; moves *s past it.
 * False without digits or when it overflows. */
static bool tm_parse_u64(const char **s, uint64_t *out) {
  const char *p = *s;
  while (*p == ' ' || *p == '\t') p++;
  if (*p < '0' || *p > '9') return false;
  uint64_t v = 0;
  for (; *p >= '0' && *p <= '9'; p++) {
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *s = p;
  *out = v;
  return true;
}

static size_t tm_to_size(uint64_t v) { return v > SIZE_MAX ? SIZE_MAX : (size_t)v; }

/* Append s to dst[0..*len), keeping it a string; false when it does not fit. */
static bool tm_append(char *dst, size_t cap, size_t *len, const char *s, size_t n) {
  if (n >= cap - *len) return false;
  memcpy(dst + *len, s, n);
  *len += n;
  dst[*len] = '\0';
  return true;
}

static bool tm_append_u(char *dst, size_t cap, size_t *len, uint64_t v) {
  char digits[24];
  size_t n = sizeof digits;
  do digits[--n] = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  return tm_append(dst, cap, len, digits + n, sizeof digits - n);
}

/* ---- PSI trigger --------------------------------------------------------------------- */
/* One attempt: open, arm. Leaves the kernel's errno on failure. */
static int tm_psi_try(const char *path, unsigned stall_us, unsigned window_us) {
  char trig[48];
  size_t len = 0;
  tm_append(trig, sizeof trig, &len, "some ", 5);
  tm_append_u(trig, sizeof trig, &len, stall_us);
  tm_append(trig, sizeof trig, &len, " ", 1);
  tm_append_u(trig, sizeof trig, &len, window_us);
  int fd = tm_sys_open(path, O_RDWR | O_NONBLOCK);
  if (fd < 0) return -1;
  ssize_t n = tm_sys_write(fd, trig, len + 1); /* with the NUL, as psi.rst does */
  if (n == (ssize_t)(len + 1)) return fd;
  int err = n < 0 ? errno : EIO;
  tm_sys_close(fd);
  errno = err;
  return -1;
}

/* The trigger an unprivileged process may arm: the window a multiple of
 * 2 s (within the kernel's 10 s bound), the stall the same share of it,
 * below the window. False when that is what was asked already. */
static bool tm_psi_relax(unsigned stall_us, unsigned window_us, unsigned *stall, unsigned *window) {
  uint64_t w = ((uint64_t)window_us + TM_PSI_UNPRIV_US - 1) / TM_PSI_UNPRIV_US * TM_PSI_UNPRIV_US;
  if (w < TM_PSI_UNPRIV_US) w = TM_PSI_UNPRIV_US;
  if (w > TM_PSI_WINDOW_MAX_US) w = TM_PSI_WINDOW_MAX_US;
  uint64_t s = window_us ? (uint64_t)stall_us * w / window_us : stall_us;
  if (s >= w) s = w - 1;
  if (s == 0 && stall_us > 0) s = 1;
  if (s == stall_us && w == window_us) return false;
  *stall = (unsigned)s;
  *window = (unsigned)w;
  return true;
}

int tm_psi_open_at(const char *path, unsigned stall_us, unsigned window_us) {
  int saved = errno;
  int fd = tm_psi_try(path, stall_us, window_us);
  unsigned s, w;
  if (fd < 0 && (errno == EPERM || errno == EINVAL) && tm_psi_relax(stall_us, window_us, &s, &w))
    fd = tm_psi_try(path, s, w);
  errno = saved;
  return fd;
}

int tm_psi_open(unsigned stall_us, unsigned window_us) {
  return tm_psi_open_at("/proc/pressure/memory", stall_us, window_us);
}

void tm_psi_close(int fd) {
  int saved = errno;
  if (fd >= 0) tm_sys_close(fd); /* the trigger goes with the descriptor */
  errno = saved;
}

/* ---- where the cgroups are --------------------------------------------------------- */
static void tm_hier_init(tm_cg_hier *h, const char *mount) {
  h->present = h->mount_found = false;
  size_t len = 0;
  h->mount[0] = '\0';
  tm_append(h->mount, sizeof h->mount, &len, mount, strlen(mount));
  strcpy(h->root, "/");
  h->path[0] = '\0';
}

void tm_cgroup_loc_init(tm_cgroup_loc *loc) {
  tm_hier_init(&loc->v2, "/sys/fs/cgroup");
  tm_hier_init(&loc->v1, "/sys/fs/cgroup/memory");
}

/* "hierarchy-id:controllers:path". The unified hierarchy is "0::path"; a
 * v1 one lists its controllers ("4:memory:/x", "5:cpu,memory:/x"). */
static void tm_self_line(void *ctx, const char *l, size_t len) {
  tm_cgroup_loc *loc = ctx;
  const char *end = l + len;
  const char *c1 = memchr(l, ':', len);
  if (!c1) return;
  const char *ctl = c1 + 1;
  const char *c2 = memchr(ctl, ':', (size_t)(end - ctl));
  if (!c2) return;
  tm_cg_hier *h;
  if (tm_eq(l, (size_t)(c1 - l), "0") && c2 == ctl)
    h = &loc->v2;
  else if (tm_has_item(ctl, (size_t)(c2 - ctl), ',', "memory"))
    h = &loc->v1;
  else
    return;
  const char *path = c2 + 1;
  size_t plen = (size_t)(end - path);
  static const char deleted[] = " (deleted)"; /* a removed cgroup, v2 */
  if (plen > sizeof deleted - 1 && memcmp(end - (sizeof deleted - 1), deleted, sizeof deleted - 1) == 0)
    plen -= sizeof deleted - 1;
  if (plen == 0 || path[0] != '/' || plen >= sizeof h->path) return; /* nothing we could walk */
  memcpy(h->path, path, plen);
  h->path[plen] = '\0';
  h->present = true;
}

bool tm_cgroup_parse_self(tm_cgroup_loc *loc, const char *text) {
  tm_text_lines(text, tm_self_line, loc);
  return loc->v2.present || loc->v1.present;
}

/* The next space-separated field of a line. */
static bool tm_field(const char *l, size_t len, size_t *pos, const char **f, size_t *flen) {
  size_t p = *pos;
  while (p < len && l[p] == ' ') p++;
  if (p == len) return false;
  size_t start = p;
  while (p < len && l[p] != ' ') p++;
  *f = l + start;
  *flen = p - start;
  *pos = p;
  return true;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static bool tm_unescape(char *dst, size_t cap, const char *s, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (c == '\\' && i + 3 < len && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' && s[i + 2] <= '7' &&
        s[i + 3] >= '0' && s[i + 3] <= '7') {
      c = (char)((s[i + 1] - '0') << 6 | (s[i + 2] - '0') << 3 | (s[i + 3] - '0'));
      i += 3;
    }
    if (n + 1 >= cap) return false;
    dst[n++] = c;
  }
  dst[n] = '\0';
  return n > 0;
}

/* Is the cgroup at path inside the part of the hierarchy mounted from root? */
static bool tm_root_holds(const char *root, const char *path) {
  size_t rl = strlen(root);
  while (rl > 0 && root[rl - 1] == '/') rl--;
  return strncmp(path, root, rl) == 0 && (path[rl] == '/' || path[rl] == '\0');
}

/* "id parent major:minor root mount-point options [optional...] - type
 * source super-options": cgroup2 is the unified hierarchy; a cgroup mount
 * whose super options name the memory controller is the v1 one. */
static void tm_mount_line(void *ctx, const char *l, size_t len) {
  tm_cgroup_loc *loc = ctx;
  const char *f[6], *t, *type, *opts = "";
  size_t fl[6], tl, typel, optsl = 0;
  size_t pos = 0;
  for (int i = 0; i < 6; i++)
    if (!tm_field(l, len, &pos, &f[i], &fl[i])) return;
  do { /* optional fields ("shared:5") up to the separator */
    if (!tm_field(l, len, &pos, &t, &tl)) return;
  } while (!tm_eq(t, tl, "-"));
  if (!tm_field(l, len, &pos, &type, &typel) || !tm_field(l, len, &pos, &t, &tl)) return;
  tm_field(l, len, &pos, &opts, &optsl); /* the super options, if any */
  tm_cg_hier *h;
  if (tm_eq(type, typel, "cgroup2"))
    h = &loc->v2;
  else if (tm_eq(type, typel, "cgroup") && tm_has_item(opts, optsl, ',', "memory"))
    h = &loc->v1;
  else
    return;
  char root[TM_CG_MOUNT_MAX], mount[TM_CG_MOUNT_MAX];
  if (!tm_unescape(root, sizeof root, f[3], fl[3]) || !tm_unescape(mount, sizeof mount, f[4], fl[4])) return;
  /* of several mounts, the first, unless a later one holds our cgroup and it does not */
  if (h->mount_found && (!h->present || tm_root_holds(h->root, h->path) || !tm_root_holds(root, h->path))) return;
  memcpy(h->root, root, sizeof root);
  memcpy(h->mount, mount, sizeof mount);
  h->mount_found = true;
}

bool tm_cgroup_parse_mountinfo(tm_cgroup_loc *loc, const char *text) {
  tm_text_lines(text, tm_mount_line, loc);
  return loc->v2.mount_found || loc->v1.mount_found;
}

bool tm_cgroup_locate(tm_cgroup_loc *loc) {
  int saved = errno;
  tm_cgroup_loc_init(loc);
  tm_file_lines("/proc/self/cgroup", tm_self_line, loc);
  if (loc->v2.present || loc->v1.present) tm_file_lines("/proc/self/mountinfo", tm_mount_line, loc);
  errno = saved;
  return loc->v2.present || loc->v1.present;
}

/* ---- the walk ------------------------------------------------------------------------ */
/* A directory of the walk: sysfs_root + mount point + cgroup path, with
 * room for a file name ("/memory.soft_limit_in_bytes") behind it. */
#define TM_CG_FILE_MAX 32
#define TM_CG_DIR_MAX (TM_CG_MOUNT_MAX + TM_CG_PATH_MAX + 256)

typedef struct tm_walk {
  char dir[TM_CG_DIR_MAX];
  size_t len;  /* of dir */
  size_t base; /* of the mount point's directory: the walk stops there */
} tm_walk;

/* The process's cgroup relative to what is mounted: "" for the mount
 * point itself. A cgroup outside the mounted part (or a path with "..",
 * as seen from another cgroup namespace) can only be seen at the mount
 * point. */
static const char *tm_relative(const tm_cg_hier *h) {
  if (!tm_root_holds(h->root, h->path)) return "";
  size_t rl = strlen(h->root);
  while (rl > 0 && h->root[rl - 1] == '/') rl--;
  const char *rel = h->path + rl;
  for (const char *p = rel; (p = strstr(p, "/..")) != NULL; p += 3)
    if (p[3] == '/' || p[3] == '\0') return "";
  return rel;
}

static bool tm_walk_start(tm_walk *w, const char *sysfs_root, const tm_cg_hier *h) {
  size_t ml = strlen(h->mount), rl;
  while (ml > 0 && h->mount[ml - 1] == '/') ml--;
  const char *rel = tm_relative(h);
  rl = strlen(rel);
  while (rl > 0 && rel[rl - 1] == '/') rl--;
  size_t cap = sizeof w->dir - TM_CG_FILE_MAX; /* room for a file name behind */
  w->len = 0;
  w->dir[0] = '\0';
  if (!tm_append(w->dir, cap, &w->len, sysfs_root, strlen(sysfs_root)) ||
      !tm_append(w->dir, cap, &w->len, h->mount, ml))
    return false;
  w->base = w->len;
  return tm_append(w->dir, cap, &w->len, rel, rl);
}

/* To the parent directory; false at the mount point. */
static bool tm_walk_up(tm_walk *w) {
  if (w->len <= w->base) return false;
  while (w->len > w->base && w->dir[w->len - 1] != '/') w->len--;
  if (w->len > w->base) w->len--; /* the slash */
  w->dir[w->len] = '\0';
  return true;
}

/* The value of a file in the walk's directory (its name appended to the
 * directory for the open, then taken off again): a number, "max" (none),
 * or false when it cannot be read or parsed. */
static bool tm_walk_read(tm_walk *w, const char *file, uint64_t *out) {
  char buf[64];
  size_t len = w->len;
  bool named = tm_append(w->dir, sizeof w->dir, &len, "/", 1) && tm_append(w->dir, sizeof w->dir, &len, file, strlen(file));
  ssize_t n = named ? tm_read_small(w->dir, buf, sizeof buf) : -1;
  w->dir[w->len] = '\0';
  if (n < 0) return false;
  const char *p = buf;
  while (*p == ' ' || *p == '\t') p++;
  if (strncmp(p, "max", 3) == 0) {
    *out = TM_NO_LIMIT;
    return true;
  }
  return tm_parse_u64(&p, out);
}

static uint64_t tm_walk_limit(tm_walk *w, const char *file) {
  uint64_t v;
  if (!tm_walk_read(w, file, &v) || v >= TM_CG_UNLIMITED) return TM_NO_LIMIT;
  return v;
}

/* Walk one hierarchy from the process's cgroup up to the mount point: a
 * parent's limit applies to its children too. Equal limits go to the
 * ancestor: it holds more than we do, so it is the nearer to its limit.
 * The usage is read where the limit is, and always at depth 0 (*own). */
static void tm_walk_hier(const char *sysfs_root, const tm_cg_hier *h, bool v2, tm_memory_reading *best,
                         uint64_t *own) {
  tm_walk w;
  if (!h->present || !tm_walk_start(&w, sysfs_root, h)) return;
  const char *limits[2] = {v2 ? "memory.max" : "memory.limit_in_bytes",
                           v2 ? "memory.high" : "memory.soft_limit_in_bytes"};
  const char *usage = v2 ? "memory.current" : "memory.usage_in_bytes";
  unsigned depth = 0;
  do {
    uint64_t lim = tm_walk_limit(&w, limits[0]), soft = tm_walk_limit(&w, limits[1]), use = 0;
    if (soft < lim) lim = soft;
    bool here = lim != TM_NO_LIMIT && tm_to_size(lim) <= best->limit;
    if ((here || depth == 0) && !tm_walk_read(&w, usage, &use)) use = 0;
    if (depth == 0 && use > 0 && *own == 0) {
      *own = use;
      if (best->hier == 0) best->hier = v2 ? 2 : 1;
    }
    if (here) {
      best->limit = tm_to_size(lim);
      best->usage = tm_to_size(use);
      best->hier = v2 ? 2 : 1;
      best->depth = depth;
    }
    depth++;
    if (!tm_walk_up(&w)) break;
    /* v1 without use_hierarchy: the parent does not count its children */
    uint64_t hierarchy;
    if (!v2 && tm_walk_read(&w, "memory.use_hierarchy", &hierarchy) && hierarchy == 0) break;
  } while (true);
}

void tm_memory_read_at(const char *sysfs_root, const tm_cgroup_loc *loc, tm_memory_reading *out) {
  int saved = errno;
  tm_memory_reading r = {SIZE_MAX, 0, 0, 0};
  uint64_t own = 0;
  tm_walk_hier(sysfs_root, &loc->v2, true, &r, &own);
  tm_walk_hier(sysfs_root, &loc->v1, false, &r, &own);
  if (r.limit == SIZE_MAX) r.usage = tm_to_size(own);
  *out = r;
  errno = saved;
}

void tm_memory_read(tm_memory_reading *out) {
  tm_cgroup_loc loc;
  tm_memory_reading none = {SIZE_MAX, 0, 0, 0};
  if (tm_cgroup_locate(&loc))
    tm_memory_read_at("", &loc, out);
  else
    *out = none;
}

size_t tm_memory_limit(void) {
  tm_memory_reading r;
  tm_memory_read(&r);
  return r.limit;
}

size_t tm_memory_usage(void) {
  tm_memory_reading r;
  tm_memory_read(&r);
  return r.usage;
}

/* ---- resident size ------------------------------------------------------------------- */
/* statm: "size resident shared text lib data dt", in pages. */
size_t tm_rss_bytes(void) {
  int saved = errno;
  char buf[128];
  uint64_t size, pages;
  const char *p = buf;
  long page = sysconf(_SC_PAGESIZE);
  size_t rss = 0;
  if (page > 0 && tm_read_small("/proc/self/statm", buf, sizeof buf) > 0 && tm_parse_u64(&p, &size) &&
      tm_parse_u64(&p, &pages))
    rss = tm_to_size(pages * (uint64_t)page);
  errno = saved;
  return rss;
}

/* ---- transparent huge pages -------------------------------------------------------- */
/* /sys/kernel/mm/transparent_hugepage/enabled reads "always [madvise] never",
 * the bracketed word being in force. */
bool tm_thp_mode_always(void) {
  int saved = errno;
  char buf[128];
  bool always = tm_read_small("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof buf) > 0 &&
                strstr(buf, "[always]") != NULL;
  errno = saved;
  return always;
}
