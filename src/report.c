/* Diagnostics that must work from inside the allocator: no malloc, no stdio,
 * only the write system call (never the cancellable write(2)) on stack
 * buffers. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <unistd.h>

/* Not write(2), a cancellation point: a thread with a cancellation pending
 * would die in the first write of malloc_stats, or inside malloc while it
 * reports an error (src/sysio.c). */
void tm_write_str(int fd, const char *s) {
  size_t n = strlen(s);
  while (n > 0) {
    ssize_t w = tm_sys_write(fd, s, n);
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

void tm_line_add_n(tm_line *l, const char *s, size_t n) {
  for (size_t i = 0; i < n && s[i] && l->len + 1 < l->cap; i++) l->buf[l->len++] = s[i];
  l->buf[l->len] = 0;
}

void tm_line_add(tm_line *l, const char *s) { tm_line_add_n(l, s, SIZE_MAX); }

void tm_line_add_u64(tm_line *l, uint64_t v) {
  char tmp[24];
  size_t n = sizeof tmp - 1;
  tmp[n] = 0;
  do {
    tmp[--n] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  tm_line_add(l, tmp + n);
}

void tm_line_add_hex(tm_line *l, uint64_t v) {
  static const char digits[] = "0123456789abcdef";
  char tmp[24];
  size_t n = sizeof tmp - 1;
  tmp[n] = 0;
  do {
    tmp[--n] = digits[v & 15];
    v >>= 4;
  } while (v);
  tmp[--n] = 'x';
  tmp[--n] = '0';
  tm_line_add(l, tmp + n);
}

/* "tidemalloc: free(): invalid pointer 0x...", then abort unless
 * TIDE_ABORT_ON_ERROR=0, in which case the call is ignored. */
void tm_report_invalid(const char *who, const void *p, const char *what) {
  int saved = errno;
  char storage[160];
  TM_LINE(line, storage);
  tm_line_add(&line, "tidemalloc: ");
  tm_line_add(&line, who);
  tm_line_add(&line, "(): ");
  tm_line_add(&line, what);
  tm_line_add(&line, " ");
  tm_line_add_hex(&line, (uint64_t)(uintptr_t)p);
  tm_line_add(&line, "\n");
  tm_write_str(2, line.buf);
  if (tm_opt.abort_on_error) abort();
  errno = saved;
}

void tm_warn(const char *msg, const char *detail) {
  int saved = errno;
  tm_write_str(2, "tidemalloc: warning: ");
  tm_write_str(2, msg);
  if (detail) tm_write_str(2, detail);
  tm_write_str(2, "\n");
  errno = saved;
}

/* One line per inconsistency found by tide_heap_check(). */
int tm_check_problem(const char *what, const void *where) {
  char storage[160];
  TM_LINE(line, storage);
  tm_line_add(&line, "tidemalloc: heap check: ");
  tm_line_add(&line, what);
  tm_line_add(&line, " at ");
  tm_line_add_hex(&line, (uint64_t)(uintptr_t)where);
  tm_line_add(&line, "\n");
  tm_write_str(2, line.buf);
  return 1;
}

void tm_assert_fail(const char *expr, const char *file, int line) {
  char storage[256];
  TM_LINE(l, storage);
  tm_line_add(&l, "tidemalloc: internal assertion failed: ");
  tm_line_add(&l, expr);
  tm_line_add(&l, " (");
  tm_line_add(&l, file);
  tm_line_add(&l, ":");
  tm_line_add_u64(&l, (uint64_t)line);
  tm_line_add(&l, ")\n");
  tm_write_str(2, l.buf);
  abort();
}
