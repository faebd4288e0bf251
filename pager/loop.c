/* The pager's event loop: it waits for the front end's wakeups (an
 * eventfd), for a timeout, and for the memory pressure trigger (a PSI file
 * descriptor, pager/pressure.c), and says which came.
 *
 * Two backends: poll(2), and io_uring (liburing) where the build has it and
 * the kernel allows it (not disabled by sysctl or refused by seccomp): a
 * read of the eventfd, a poll of the PSI descriptor and a timeout in flight
 * together, one io_uring_enter to wait. Either way nothing here allocates. */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "pager_int.h"

#ifdef HAVE_LIBURING
#include <liburing.h>
#endif

static int tm_wake_fd = -1;
static int tm_psi_fd = -1;
static unsigned tm_backend = TM_LOOP_POLL;

#ifdef HAVE_LIBURING
static struct io_uring tm_ring;
static bool tm_ring_ok;
static uint64_t tm_wake_buf; /* the eventfd read in flight lands here */
static bool tm_read_armed, tm_psi_armed;

enum { TM_TAG_WAKE = 1, TM_TAG_PSI, TM_TAG_TIMEOUT };

static bool tm_uring_open(void) {
  if (io_uring_queue_init(8, &tm_ring, 0) < 0) return false;
  tm_ring_ok = true;
  tm_read_armed = tm_psi_armed = false;
  return true;
}

static void tm_uring_close(void) {
  if (!tm_ring_ok) return;
  io_uring_queue_exit(&tm_ring);
  tm_ring_ok = false;
}

/* Arm what is not in flight yet, plus a timeout; wait for one completion,
 * then reap whatever else completed. */
static unsigned tm_uring_wait(int timeout_ms) {
  struct io_uring_sqe *sqe;
  if (!tm_read_armed && (sqe = io_uring_get_sqe(&tm_ring)) != NULL) {
    io_uring_prep_read(sqe, tm_wake_fd, &tm_wake_buf, sizeof tm_wake_buf, 0);
    io_uring_sqe_set_data64(sqe, TM_TAG_WAKE);
    tm_read_armed = true;
  }
  if (tm_psi_fd >= 0 && !tm_psi_armed && (sqe = io_uring_get_sqe(&tm_ring)) != NULL) {
    io_uring_prep_poll_add(sqe, tm_psi_fd, POLLPRI);
    io_uring_sqe_set_data64(sqe, TM_TAG_PSI);
    tm_psi_armed = true;
  }
  struct __kernel_timespec ts = {timeout_ms / 1000, (long long)(timeout_ms % 1000) * 1000000};
  if (timeout_ms >= 0 && (sqe = io_uring_get_sqe(&tm_ring)) != NULL) {
    io_uring_prep_timeout(sqe, &ts, 1, 0); /* ends at the first other completion too */
    io_uring_sqe_set_data64(sqe, TM_TAG_TIMEOUT);
  }
  struct io_uring_cqe *cqe;
  int rc = io_uring_submit_and_wait(&tm_ring, 1);
  unsigned events = 0;
  if (rc < 0 && rc != -EINTR && rc != -ETIME) return TM_EV_ERROR;
  while (io_uring_peek_cqe(&tm_ring, &cqe) == 0) {
    switch (io_uring_cqe_get_data64(cqe)) {
      case TM_TAG_WAKE:
        tm_read_armed = false;
        events |= TM_EV_WAKE;
        break;
      case TM_TAG_PSI:
        tm_psi_armed = false;
        if (cqe->res > 0) events |= TM_EV_PRESSURE;
        if (cqe->res < 0) tm_psi_fd = -1; /* stop asking */
        break;
      default:
        events |= TM_EV_TIMEOUT;
        break;
    }
    io_uring_cqe_seen(&tm_ring, cqe);
  }
  return events;
}
#endif

static unsigned tm_poll_wait(int timeout_ms) {
  struct pollfd fds[2] = {{tm_wake_fd, POLLIN, 0}, {tm_psi_fd, POLLPRI, 0}};
  int rc = poll(fds, tm_psi_fd >= 0 ? 2 : 1, timeout_ms);
  if (rc < 0) return errno == EINTR ? 0 : TM_EV_ERROR;
  unsigned events = rc == 0 ? TM_EV_TIMEOUT : 0;
  if (fds[0].revents & POLLIN) {
    uint64_t v;
    if (read(tm_wake_fd, &v, sizeof v) < 0) { /* EAGAIN: another read took it */
    }
    events |= TM_EV_WAKE;
  }
  if (tm_psi_fd >= 0 && (fds[1].revents & POLLPRI)) events |= TM_EV_PRESSURE;
  if (tm_psi_fd >= 0 && (fds[1].revents & (POLLERR | POLLNVAL))) tm_psi_fd = -1;
  return events;
}

bool tm_loop_open(int psi_fd, bool allow_uring) {
  tm_wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (tm_wake_fd < 0) return false;
  tm_psi_fd = psi_fd;
  tm_backend = TM_LOOP_POLL;
#ifdef HAVE_LIBURING
  if (allow_uring && tm_uring_open()) tm_backend = TM_LOOP_URING;
#else
  (void)allow_uring;
#endif
  return true;
}

unsigned tm_loop_backend(void) { return tm_backend; }

bool tm_loop_has_psi(void) { return tm_psi_fd >= 0; }

/* Wait up to timeout_ms (-1: until woken). Returns TM_EV_* bits. */
unsigned tm_loop_wait(int timeout_ms) {
#ifdef HAVE_LIBURING
  if (tm_backend == TM_LOOP_URING) {
    unsigned ev = tm_uring_wait(timeout_ms);
    if (!(ev & TM_EV_ERROR)) return ev;
    tm_uring_close(); /* fall back for good */
    tm_backend = TM_LOOP_POLL;
  }
#endif
  return tm_poll_wait(timeout_ms);
}

/* From any thread, inside malloc and free: wake the pager, with no
 * cancellation point (tm_sys_write). */
void tm_loop_wake(void) {
  uint64_t one = 1;
  int saved = errno;
  if (tm_wake_fd >= 0 && tm_sys_write(tm_wake_fd, &one, sizeof one) < 0) {
    /* EAGAIN: the counter is already huge, the pager will wake anyway */
  }
  errno = saved;
}

/* In a fork child: the descriptors (and the ring's memory) are shared with
 * the parent's pager; let go of them without touching the parent's. */
void tm_loop_after_fork(void) {
#ifdef HAVE_LIBURING
  tm_uring_close();
#endif
  if (tm_wake_fd >= 0) close(tm_wake_fd);
  tm_wake_fd = -1;
  tm_psi_fd = -1; /* closed by pressure.c, which owns it */
  tm_backend = TM_LOOP_POLL;
}
