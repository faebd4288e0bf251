/* Reads and writes of small kernel files and descriptors with no
 * cancellation point. The allocator does I/O inside malloc_stats,
 * tide_get_stats, its error reports, and (a pager wakeup) inside malloc and
 * free; glibc's allocator is never a cancellation point, so ours must not
 * be either: a thread with a cancellation pending would otherwise die in
 * the middle of it (printing nothing, or inside free). open(2), read(2),
 * write(2) and close(2) are cancellation points; the same system calls
 * through syscall(2) are not. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

int tm_sys_open(const char *path, int flags) {
  long fd;
  do fd = syscall(SYS_openat, AT_FDCWD, path, flags | O_CLOEXEC, 0);
  while (fd < 0 && errno == EINTR);
  return (int)fd;
}

ssize_t tm_sys_read(int fd, void *buf, size_t n) {
  long r;
  do r = syscall(SYS_read, fd, buf, n);
  while (r < 0 && errno == EINTR);
  return (ssize_t)r;
}

ssize_t tm_sys_write(int fd, const void *buf, size_t n) {
  long r;
  do r = syscall(SYS_write, fd, buf, n);
  while (r < 0 && errno == EINTR);
  return (ssize_t)r;
}

void tm_sys_close(int fd) { syscall(SYS_close, fd); }

ssize_t tm_read_small(const char *path, char *buf, size_t cap) {
  int fd = tm_sys_open(path, O_RDONLY);
  if (fd < 0) return -1;
  size_t len = 0;
  while (len + 1 < cap) {
    ssize_t n = tm_sys_read(fd, buf + len, cap - 1 - len);
    if (n < 0) {
      tm_sys_close(fd);
      return -1;
    }
    if (n == 0) break;
    len += (size_t)n;
  }
  tm_sys_close(fd);
  buf[len] = '\0';
  return (ssize_t)len;
}
