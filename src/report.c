/* Diagnostics that must work from inside the allocator: no malloc, no stdio,
 * only write(2) on stack buffers. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void tm_write_str(int fd, const char *s) {
  size_t n = strlen(s);
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w <= 0) {
      if (w < 0 && errno == EINTR) continue;
      return;
    }
    s += w;
    n -= (size_t)w;
  }
}

size_t tm_fmt_u64(char *buf, uint64_t v) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  for (size_t i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
  buf[n] = 0;
  return n;
}

size_t tm_fmt_hex(char *buf, uint64_t v) {
  static const char digits[] = "0123456789abcdef";
  char tmp[20];
  size_t n = 0;
  do {
    tmp[n++] = digits[v & 15];
    v >>= 4;
  } while (v);
  buf[0] = '0';
  buf[1] = 'x';
  for (size_t i = 0; i < n; i++) buf[2 + i] = tmp[n - 1 - i];
  buf[2 + n] = 0;
  return n + 2;
}

/* "tidemalloc: free(): invalid pointer 0x...", then abort unless
 * TIDE_ABORT_ON_ERROR=0, in which case the call is ignored. */
void tm_report_invalid(const char *who, const void *p, const char *what) {
  int saved = errno;
  char line[160];
  char num[24];
  line[0] = 0;
  strcat(line, "tidemalloc: ");
  strncat(line, who, 32);
  strcat(line, "(): ");
  strncat(line, what, 48);
  strcat(line, " ");
  tm_fmt_hex(num, (uint64_t)(uintptr_t)p);
  strcat(line, num);
  strcat(line, "\n");
  tm_write_str(2, line);
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
