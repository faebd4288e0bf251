/*
 * rss_sample: run a command and sample its VmRSS every INTERVAL_MS.
 *
 * Usage: rss_sample INTERVAL_MS OUT.csv -- [NAME=VALUE...] cmd [args...]
 *
 * Forks, execs cmd (searched in PATH) and, from the moment the exec has
 * succeeded, reads VmRSS from /proc/PID/status every INTERVAL_MS
 * milliseconds (absolute CLOCK_MONOTONIC deadlines, so the period does not
 * drift).  The first sample is taken immediately after the exec.  OUT.csv
 * gets a header line "t_ms,rss_kb" and then one "t_ms,rss_kb" line per
 * sample, t_ms being milliseconds since the exec.
 *
 * Leading NAME=VALUE words after "--" are put in the child's environment
 * only (like env(1)), so e.g. LD_PRELOAD affects the measured command and
 * not the sampler.
 *
 * The child's stdin/stdout/stderr are inherited.  rss_sample exits with the
 * child's exit status, 128+N if the child died of signal N, 126/127 if the
 * command could not be executed / found, and 2 on a usage error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t child_pid;

static void forward_signal(int sig)
{
	if (child_pid > 0)
		kill((pid_t)child_pid, sig);
}

static void usage(const char *why)
{
	if (why)
		fprintf(stderr, "rss_sample: %s\n", why);
	fprintf(stderr,
		"usage: rss_sample INTERVAL_MS OUT.csv -- [NAME=VALUE...] cmd [args...]\n");
	exit(2);
}

/* VmRSS of pid in KiB, or -1 if unavailable (e.g. the process is a zombie). */
static long read_rss_kb(const char *path)
{
	char buf[4096];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	char *p = strstr(buf, "\nVmRSS:");
	if (!p)
		return -1;
	return strtol(p + 7, NULL, 10);
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) * 1e3 +
	       (double)(t.tv_nsec - t0->tv_nsec) * 1e-6;
}

static int exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 1;
}

int main(int argc, char **argv)
{
	if (argc < 5)
		usage(NULL);

	char *end;
	errno = 0;
	long interval = strtol(argv[1], &end, 10);
	if (errno || end == argv[1] || *end || interval < 1 || interval > 60000)
		usage("INTERVAL_MS must be an integer in 1..60000");
	if (strcmp(argv[3], "--") != 0)
		usage("expected -- before the command");

	int cmd = 4;
	while (cmd < argc && strchr(argv[cmd], '=') && argv[cmd][0] != '=')
		cmd++;
	if (cmd >= argc)
		usage("missing command");

	FILE *out = fopen(argv[2], "w");
	if (!out) {
		fprintf(stderr, "rss_sample: %s: %s\n", argv[2], strerror(errno));
		return 2;
	}

	/* Close-on-exec pipe: EOF means the exec succeeded, data is errno. */
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) != 0) {
		perror("rss_sample: pipe2");
		return 2;
	}
	fflush(NULL);

	pid_t pid = fork();
	if (pid < 0) {
		perror("rss_sample: fork");
		return 2;
	}
	if (pid == 0) {
		close(pfd[0]);
		for (int i = 4; i < cmd; i++) {
			if (putenv(argv[i]) != 0)
				_exit(127);
		}
		execvp(argv[cmd], &argv[cmd]);
		int e = errno;
		ssize_t w = write(pfd[1], &e, sizeof(e));
		(void)w;
		_exit(e == ENOENT ? 127 : 126);
	}
	close(pfd[1]);

	child_pid = pid;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = forward_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	int exec_errno = 0;
	ssize_t r;
	do
		r = read(pfd[0], &exec_errno, sizeof(exec_errno));
	while (r < 0 && errno == EINTR);
	close(pfd[0]);

	struct timespec t0, next;
	clock_gettime(CLOCK_MONOTONIC, &t0);

	if (r > 0) {
		fprintf(stderr, "rss_sample: %s: %s\n", argv[cmd],
			strerror(exec_errno));
		int status;
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		fclose(out);
		return exit_code(status);
	}

	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	fputs("t_ms,rss_kb\n", out);

	next = t0;
	int status = 0;
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			perror("rss_sample: waitpid");
			status = 1 << 8;
			break;
		}
		long kb = read_rss_kb(path);
		if (kb >= 0)
			fprintf(out, "%.3f,%ld\n", ms_since(&t0), kb);

		next.tv_nsec += interval * 1000000L;
		while (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		/* If we fell behind (slow machine), don't burst to catch up. */
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > next.tv_sec ||
		    (now.tv_sec == next.tv_sec && now.tv_nsec > next.tv_nsec))
			next = now;
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next,
				       NULL) == EINTR)
			;
	}

	if (fclose(out) != 0) {
		fprintf(stderr, "rss_sample: %s: write error\n", argv[2]);
		return 2;
	}
	return exit_code(status);
}
