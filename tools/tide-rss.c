/*
 * tide-rss: run a command, optionally with an allocator preloaded, and
 * sample its memory over time.
 *
 *   tide-rss [--alloc NAME|PATH] [--interval MS] [--smaps-every N] [--tree]
 *            [--csv FILE] [--summary FILE] [--quiet] -- command [args...]
 *
 * Every --interval ms (default 10) VmRSS is read from /proc/PID/status;
 * every --smaps-every-th sample (default 10) Pss and USS (Private_Clean +
 * Private_Dirty) are read from /proc/PID/smaps_rollup, and carried over
 * in between.  With --tree the values are summed over the process and
 * all its descendants.  The samples go to a CSV file
 * (t_ms,rss_kb,pss_kb,uss_kb) and one summary line goes to stderr (and to
 * --summary FILE).  See doc/tide-rss.1.
 *
 * This program is deliberately not linked against tidemalloc, and the
 * preload is set only in the child's environment: the sampler never runs
 * under the allocator it measures.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <ctype.h>
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef TIDE_RSS_LIBDIR
#define TIDE_RSS_LIBDIR "/usr/local/lib"
#endif
#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

/* Debian multiarch directory of this build's architecture. */
#if defined(__x86_64__) && defined(__ILP32__)
#define TIDE_RSS_MULTIARCH "x86_64-linux-gnux32"
#elif defined(__x86_64__)
#define TIDE_RSS_MULTIARCH "x86_64-linux-gnu"
#elif defined(__i386__)
#define TIDE_RSS_MULTIARCH "i386-linux-gnu"
#elif defined(__aarch64__)
#define TIDE_RSS_MULTIARCH "aarch64-linux-gnu"
#elif defined(__arm__) && defined(__ARM_PCS_VFP)
#define TIDE_RSS_MULTIARCH "arm-linux-gnueabihf"
#elif defined(__arm__)
#define TIDE_RSS_MULTIARCH "arm-linux-gnueabi"
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define TIDE_RSS_MULTIARCH "powerpc64le-linux-gnu"
#elif defined(__powerpc64__)
#define TIDE_RSS_MULTIARCH "powerpc64-linux-gnu"
#elif defined(__s390x__)
#define TIDE_RSS_MULTIARCH "s390x-linux-gnu"
#elif defined(__riscv) && __riscv_xlen == 64
#define TIDE_RSS_MULTIARCH "riscv64-linux-gnu"
#elif defined(__loongarch64)
#define TIDE_RSS_MULTIARCH "loongarch64-linux-gnu"
#elif defined(__mips64) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define TIDE_RSS_MULTIARCH "mips64el-linux-gnuabi64"
#else
#define TIDE_RSS_MULTIARCH ""
#endif

static const char *prog = "tide-rss";

/* ------------------------------------------------------------------ */
/* small helpers                                                      */
/* ------------------------------------------------------------------ */

static void die_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "%s: ", prog);
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry '%s --help' for more information.\n", prog);
	exit(2);
}

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);
	if (!q) {
		fprintf(stderr, "%s: out of memory\n", prog);
		exit(2);
	}
	return q;
}

static char *xstrdup(const char *s)
{
	char *d = strdup(s);
	if (!d) {
		fprintf(stderr, "%s: out of memory\n", prog);
		exit(2);
	}
	return d;
}

static char *xasprintf2(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *s = xrealloc(NULL, la + lb + 1);
	memcpy(s, a, la);
	memcpy(s + la, b, lb + 1);
	return s;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static long parse_long(const char *opt, const char *s, long lo, long hi)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi) {
		fprintf(stderr, "%s: %s: invalid value '%s' (expected an integer in %ld..%ld)\n",
			prog, opt, s, lo, hi);
		fprintf(stderr, "Try '%s --help' for more information.\n", prog);
		exit(2);
	}
	return v;
}

/*
 * Read a whole (small) /proc file into buf.  Returns the length, or -1
 * with errno set (ENOENT/ESRCH when the process is gone).
 */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t len = 0;
	while (len + 1 < cap) {
		ssize_t n = read(fd, buf + len, cap - 1 - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			close(fd);
			errno = e;
			return -1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	return (ssize_t)len;
}

/* ------------------------------------------------------------------ */
/* finding the allocator library                                      */
/* ------------------------------------------------------------------ */

/* 0 if path is an existing regular file (following symlinks). */
static int is_file(const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return -1;
	if (!S_ISREG(st.st_mode)) {
		errno = 0;
		return -1;
	}
	return 0;
}

/*
 * Check that path is an ELF shared object for the architecture this
 * program was built for: ld.so ignores a bad LD_PRELOAD entry with only a
 * warning, and the command would then silently run without the allocator.
 * Returns NULL if fine, else a message.
 */
static const char *check_elf(const char *path)
{
	static char msg[256];
	unsigned char mine[sizeof(Elf64_Ehdr)], lib[sizeof(Elf64_Ehdr)];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(msg, sizeof(msg), "%s", strerror(errno));
		return msg;
	}
	ssize_t n = read(fd, lib, sizeof(lib));
	close(fd);
	if (n < (ssize_t)sizeof(Elf32_Ehdr) || memcmp(lib, ELFMAG, SELFMAG) != 0)
		return "not an ELF file";
	fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	ssize_t m = fd >= 0 ? read(fd, mine, sizeof(mine)) : -1;
	if (fd >= 0)
		close(fd);
	if (m < (ssize_t)sizeof(Elf32_Ehdr) || memcmp(mine, ELFMAG, SELFMAG) != 0)
		return NULL; /* cannot compare: let ld.so decide */
	/* e_type and e_machine sit at the same offsets in both classes. */
	uint16_t type, mach_lib, mach_mine;
	memcpy(&type, lib + offsetof(Elf64_Ehdr, e_type), 2);
	memcpy(&mach_lib, lib + offsetof(Elf64_Ehdr, e_machine), 2);
	memcpy(&mach_mine, mine + offsetof(Elf64_Ehdr, e_machine), 2);
	if (lib[EI_DATA] != mine[EI_DATA] || lib[EI_CLASS] != mine[EI_CLASS] ||
	    mach_lib != mach_mine)
		return "an ELF object for another architecture";
	if (type != ET_DYN)
		return "not a shared library";
	return NULL;
}

/* Directory holding this executable (from /proc/self/exe), or NULL. */
static char *exe_dir(void)
{
	char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	char *slash = strrchr(buf, '/');
	if (!slash)
		return NULL;
	*slash = '\0';
	return xstrdup(buf[0] ? buf : "/");
}

/*
 * The uninstalled library of the build tree this executable belongs to:
 * EXEDIR/../src/.libs/DLNAME, where DLNAME comes from
 * EXEDIR/../src/libtidemalloc.la.  NULL if the executable is not in a
 * build tree; "" if it is but the library was built static-only.
 */
static char *build_tree_lib(void)
{
	char *dir = exe_dir();
	if (!dir)
		return NULL;
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0'; /* parent of tools/ */
	char *la = xasprintf2(dir, "/src/libtidemalloc.la");
	char buf[16384];
	char *res = NULL;
	if (read_small(la, buf, sizeof(buf)) >= 0) {
		res = xstrdup("");
		for (char *line = buf; line && *line; ) {
			char *nl = strchr(line, '\n');
			if (nl)
				*nl = '\0';
			if (strncmp(line, "dlname='", 8) == 0) {
				char *q = strrchr(line + 8, '\'');
				if (q && q > line + 8) {
					*q = '\0';
					char *libs = xasprintf2(dir, "/src/.libs/");
					free(res);
					res = xasprintf2(libs, line + 8);
					free(libs);
				}
				break;
			}
			line = nl ? nl + 1 : NULL;
		}
	}
	free(la);
	free(dir);
	return res;
}

struct known_alloc {
	const char *name;
	const char *soname;
	const char *package;
};

static const struct known_alloc known_allocs[] = {
	{ "tcmalloc", "libtcmalloc_minimal.so.4", "libtcmalloc-minimal4" },
	{ "mimalloc", "libmimalloc.so.2", "libmimalloc2.0" },
	{ "jemalloc", "libjemalloc.so.2", "libjemalloc2" },
};

/* Look a system allocator's soname up in the usual library directories. */
static char *find_system_lib(const struct known_alloc *a)
{
	static const char *const dirs[] = {
		"/usr/lib/" TIDE_RSS_MULTIARCH, "/lib/" TIDE_RSS_MULTIARCH,
		"/usr/lib64", "/lib64", "/usr/lib", "/lib", "/usr/local/lib",
	};
	char path[PATH_MAX];
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		if (i < 2 && TIDE_RSS_MULTIARCH[0] == '\0')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dirs[i], a->soname);
		if (is_file(path) == 0)
			return xstrdup(path);
	}
	fprintf(stderr, "%s: --alloc %s: %s not found in /usr/lib/%s, /usr/lib64, "
		"/usr/lib or /usr/local/lib (Debian package %s); give its path instead\n",
		prog, a->name, a->soname, TIDE_RSS_MULTIARCH[0] ? TIDE_RSS_MULTIARCH : "MULTIARCH",
		a->package);
	exit(2);
}

/* tidemalloc: $TIDE_LIB, else the build tree's library, else $libdir's. */
static char *find_tide_lib(void)
{
	const char *env = getenv("TIDE_LIB");
	if (env && *env)
		return xstrdup(env);
	char *bt = build_tree_lib();
	if (bt && *bt)
		return bt;
	if (bt) {
		fprintf(stderr, "%s: --alloc tide: this build tree's libtidemalloc was built "
			"without a shared library (--disable-shared); set TIDE_LIB\n", prog);
		exit(2);
	}
	static const char *const names[] = { "/libtidemalloc.so", "/libtidemalloc.so.0" };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char *p = xasprintf2(TIDE_RSS_LIBDIR, names[i]);
		if (is_file(p) == 0)
			return p;
		free(p);
	}
	fprintf(stderr, "%s: --alloc tide: %s/libtidemalloc.so not found "
		"(is tidemalloc installed?); set TIDE_LIB to the library's path\n",
		prog, TIDE_RSS_LIBDIR);
	exit(2);
}

/*
 * Resolve --alloc.  Returns NULL for glibc (no preload), else an absolute
 * path that has been checked to be a loadable shared library.
 */
static char *resolve_alloc(const char *alloc)
{
	char *lib;

	if (strcmp(alloc, "glibc") == 0)
		return NULL;
	if (strchr(alloc, '/')) {
		lib = xstrdup(alloc);
	} else if (strcmp(alloc, "tide") == 0 || strcmp(alloc, "tidemalloc") == 0) {
		lib = find_tide_lib();
	} else {
		lib = NULL;
		for (size_t i = 0; i < sizeof(known_allocs) / sizeof(known_allocs[0]); i++)
			if (strcmp(alloc, known_allocs[i].name) == 0)
				lib = find_system_lib(&known_allocs[i]);
		if (!lib)
			die_usage("--alloc: unknown allocator '%s' (expected glibc, tcmalloc, "
				  "mimalloc, jemalloc, tide or a path containing '/')", alloc);
	}

	/* The child may change directory: make the path absolute. */
	if (lib[0] != '/') {
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof(cwd))) {
			fprintf(stderr, "%s: getcwd: %s\n", prog, strerror(errno));
			exit(2);
		}
		char *a = xasprintf2(cwd, "/");
		char *b = xasprintf2(a, lib);
		free(a);
		free(lib);
		lib = b;
	}
	/* LD_PRELOAD splits on ':' and white space. */
	if (strpbrk(lib, ": \t\n")) {
		fprintf(stderr, "%s: --alloc %s: %s: a preloaded path cannot contain ':' or white space\n",
			prog, alloc, lib);
		exit(2);
	}
	if (is_file(lib) != 0) {
		fprintf(stderr, "%s: --alloc %s: %s: %s\n", prog, alloc, lib,
			errno ? strerror(errno) : "not a regular file");
		exit(2);
	}
	const char *bad = check_elf(lib);
	if (bad) {
		fprintf(stderr, "%s: --alloc %s: %s: %s\n", prog, alloc, lib, bad);
		exit(2);
	}
	return lib;
}

/* ------------------------------------------------------------------ */
/* reading /proc                                                      */
/* ------------------------------------------------------------------ */

static int have_children_file; /* /proc/PID/task/TID/children exists */
static int have_smaps_rollup;  /* /proc/PID/smaps_rollup exists */

/* VmRSS of pid in KiB, or -1 (gone, zombie, kernel thread). */
static long read_vmrss(pid_t pid)
{
	char path[64], buf[8192];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (read_small(path, buf, sizeof(buf)) < 0)
		return -1;
	char *p = strstr(buf, "\nVmRSS:");
	if (!p)
		return -1;
	char *end;
	long v = strtol(p + 7, &end, 10);
	return end == p + 7 ? -1 : v;
}

/* Pss and USS of pid in KiB; returns -1 if unreadable. */
static int read_smaps(pid_t pid, long *pss, long *uss)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid,
		 have_smaps_rollup ? "smaps_rollup" : "smaps");
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	char *line = NULL;
	size_t cap = 0;
	long p = 0, u = 0;
	int seen = 0;
	/* smaps_rollup has one "Pss:" line; smaps one per mapping: sum all. */
	while (getline(&line, &cap, f) > 0) {
		if (strncmp(line, "Pss:", 4) == 0) {
			p += strtol(line + 4, NULL, 10);
			seen = 1;
		} else if (strncmp(line, "Private_Clean:", 14) == 0) {
			u += strtol(line + 14, NULL, 10);
		} else if (strncmp(line, "Private_Dirty:", 14) == 0) {
			u += strtol(line + 14, NULL, 10);
		}
	}
	int err = ferror(f);
	free(line);
	fclose(f);
	/* a zombie's smaps_rollup is empty */
	if (err || !seen)
		return -1;
	*pss = p;
	*uss = u;
	return 0;
}

struct pidset {
	pid_t *v;
	size_t n, cap;
};

static void pidset_add(struct pidset *s, pid_t pid)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i] == pid)
			return;
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 64;
		s->v = xrealloc(s->v, s->cap * sizeof(pid_t));
	}
	s->v[s->n++] = pid;
}

static void add_pid_list(struct pidset *s, char *buf)
{
	char *p = buf, *end;
	for (;;) {
		long v = strtol(p, &end, 10);
		if (end == p)
			break;
		if (v > 0)
			pidset_add(s, (pid_t)v);
		p = end;
	}
}

/* The number a /proc directory entry is named by, or -1. */
static int dirent_pid(const struct dirent *e)
{
	char *end;
	if (!isdigit((unsigned char)e->d_name[0]))
		return -1;
	long v = strtol(e->d_name, &end, 10);
	return *end || v <= 0 || v > INT_MAX ? -1 : (int)v;
}

/* Children of every thread of pid, from /proc/PID/task/TID/children. */
static void add_children(struct pidset *s, pid_t pid)
{
	char path[96];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return; /* gone */
	struct dirent *e;
	char buf[65536];
	while ((e = readdir(d)) != NULL) {
		int tid = dirent_pid(e);
		if (tid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, tid);
		if (read_small(path, buf, sizeof(buf)) > 0)
			add_pid_list(s, buf);
	}
	closedir(d);
}

/* Fallback without the children files: scan every /proc/PID/stat. */
static void add_descendants_by_scan(struct pidset *s)
{
	struct {
		pid_t pid, ppid;
	} *all = NULL;
	size_t n = 0, cap = 0;
	DIR *d = opendir("/proc");
	if (!d)
		return;
	struct dirent *e;
	char path[64], buf[1024];
	while ((e = readdir(d)) != NULL) {
		int p = dirent_pid(e);
		if (p <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/stat", p);
		if (read_small(path, buf, sizeof(buf)) <= 0)
			continue;
		char *rp = strrchr(buf, ')'); /* the name may contain ')' */
		int ppid;
		if (!rp || sscanf(rp + 1, " %*c %d", &ppid) != 1)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 256;
			all = xrealloc(all, cap * sizeof(*all));
		}
		all[n].pid = (pid_t)p;
		all[n].ppid = (pid_t)ppid;
		n++;
	}
	closedir(d);
	for (size_t i = 0; i < s->n; i++) /* s grows while we walk it */
		for (size_t j = 0; j < n; j++)
			if (all[j].ppid == s->v[i])
				pidset_add(s, all[j].pid);
	free(all);
}

/* s = { root } plus, with tree, all its descendants. */
static void collect(struct pidset *s, pid_t root, int tree)
{
	s->n = 0;
	pidset_add(s, root);
	if (!tree)
		return;
	if (!have_children_file) {
		add_descendants_by_scan(s);
		return;
	}
	for (size_t i = 0; i < s->n; i++)
		add_children(s, s->v[i]);
}

/* Whether the file behind lib is mapped into pid (ld.so loaded it). */
static int lib_is_mapped(pid_t pid, const char *real_lib)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return 0;
	char *line = NULL;
	size_t cap = 0, len = strlen(real_lib);
	int found = 0;
	ssize_t n;
	while (!found && (n = getline(&line, &cap, f)) > 0) {
		if (line[n - 1] == '\n')
			line[--n] = '\0';
		if ((size_t)n >= len && strcmp(line + n - len, real_lib) == 0 &&
		    (size_t)n > len && line[n - len - 1] == ' ')
			found = 1;
	}
	free(line);
	fclose(f);
	return found;
}

/* ------------------------------------------------------------------ */
/* signals                                                            */
/* ------------------------------------------------------------------ */

static volatile sig_atomic_t child_pid;
static volatile sig_atomic_t got_sigchld;

static void on_sigchld(int sig)
{
	(void)sig;
	got_sigchld = 1;
}

static void forward_signal(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	pid_t pid = (pid_t)child_pid;
	if (pid <= 0)
		return;
	/*
	 * A signal from the terminal (^C) goes to the whole foreground process
	 * group and the child has already received it: do not send it twice.
	 */
	if (si && si->si_code == SI_KERNEL && getpgid(pid) == getpgrp())
		return;
	int e = errno;
	kill(pid, sig);
	errno = e;
}

static const int forwarded[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };

/* ------------------------------------------------------------------ */
/* main                                                               */
/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [OPTION]... -- COMMAND [ARG]...\n"
		"Run COMMAND and sample its memory (VmRSS, Pss, USS) over time.\n"
		"\n"
		"  --alloc NAME|PATH  preload an allocator into COMMAND: glibc (no preload,\n"
		"                     LD_PRELOAD removed), tcmalloc, mimalloc, jemalloc,\n"
		"                     tide (TIDE_LIB, this build tree's or the installed\n"
		"                     libtidemalloc), or a path containing '/'\n"
		"  --interval MS      sample every MS milliseconds (default 10)\n"
		"  --smaps-every N    read Pss/USS every N-th sample (default 10, 0 = never)\n"
		"  --tree             sum over COMMAND and all its descendants\n"
		"  --csv FILE         write the samples as t_ms,rss_kb,pss_kb,uss_kb\n"
		"  --summary FILE     also write the summary line to FILE\n"
		"  --quiet            do not print the summary line on stderr\n"
		"  --help, --version\n"
		"\n"
		"Summary line (stderr):\n"
		"  tide-rss: samples=N rss_mean_kb=X rss_p95_kb=Y rss_max_kb=Z rss_final_kb=W\n"
		"  pss_max_kb=P uss_max_kb=U exit=S wall_s=T cmd=NAME\n"
		"Exit status: COMMAND's (128+N if killed by signal N), 2 on a usage error,\n"
		"127 if COMMAND cannot be executed.  See tide-rss(1).\n",
		prog);
}

static int cmp_long(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;
	return (x > y) - (x < y);
}

/* fclose that also reports earlier write errors. */
static int close_checked(FILE *f)
{
	int err = ferror(f);
	int rc = fclose(f);
	if (err && rc == 0) {
		errno = EIO;
		rc = -1;
	}
	return rc;
}

static FILE *open_out(const char *opt, const char *path)
{
	FILE *f = fopen(path, "we");
	if (!f) {
		fprintf(stderr, "%s: %s %s: %s\n", prog, opt, path, strerror(errno));
		exit(2);
	}
	return f;
}

int main(int argc, char **argv)
{
	const char *alloc = NULL, *csv_path = NULL, *summary_path = NULL;
	long interval_ms = 10, smaps_every = 10;
	int tree = 0, quiet = 0;

	enum { O_ALLOC = 256, O_INTERVAL, O_SMAPS, O_TREE, O_CSV, O_SUMMARY, O_QUIET,
	       O_HELP, O_VERSION };
	static const struct option opts[] = {
		{ "alloc", required_argument, NULL, O_ALLOC },
		{ "interval", required_argument, NULL, O_INTERVAL },
		{ "smaps-every", required_argument, NULL, O_SMAPS },
		{ "tree", no_argument, NULL, O_TREE },
		{ "csv", required_argument, NULL, O_CSV },
		{ "summary", required_argument, NULL, O_SUMMARY },
		{ "quiet", no_argument, NULL, O_QUIET },
		{ "help", no_argument, NULL, O_HELP },
		{ "version", no_argument, NULL, O_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	opterr = 0;
	for (;;) {
		int c = getopt_long(argc, argv, "+:", opts, NULL);
		if (c == -1)
			break;
		switch (c) {
		case O_ALLOC: alloc = optarg; break;
		case O_INTERVAL: interval_ms = parse_long("--interval", optarg, 1, 3600000); break;
		case O_SMAPS: smaps_every = parse_long("--smaps-every", optarg, 0, 1000000000); break;
		case O_TREE: tree = 1; break;
		case O_CSV: csv_path = optarg; break;
		case O_SUMMARY: summary_path = optarg; break;
		case O_QUIET: quiet = 1; break;
		case O_HELP: usage(stdout); return 0;
		case O_VERSION: printf("tide-rss (tidemalloc) %s\n", PACKAGE_VERSION); return 0;
		case ':': die_usage("option '%s' needs an argument", argv[optind - 1]); break;
		default: die_usage("unknown option '%s'", argv[optind - 1]); break;
		}
	}
	if (optind >= argc)
		die_usage("%s", "missing command (put it after --)");
	char **cmd = &argv[optind];

	char *lib = alloc ? resolve_alloc(alloc) : NULL;
	int is_tide = alloc && (strcmp(alloc, "tide") == 0 || strcmp(alloc, "tidemalloc") == 0);
	char *real_lib = lib ? realpath(lib, NULL) : NULL;

	FILE *csv = csv_path ? open_out("--csv", csv_path) : NULL;
	FILE *sum = summary_path ? open_out("--summary", summary_path) : NULL;
	if (csv)
		fputs("t_ms,rss_kb,pss_kb,uss_kb\n", csv);

	{
		char p[64];
		snprintf(p, sizeof(p), "/proc/self/task/%d/children", (int)getpid());
		have_children_file = access(p, R_OK) == 0;
		have_smaps_rollup = access("/proc/self/smaps_rollup", R_OK) == 0;
	}

	/* The command's name for the summary: basename, one word. */
	const char *base = strrchr(cmd[0], '/');
	char *name = xstrdup(base && base[1] ? base + 1 : cmd[0]);
	for (char *c = name; *c; c++)
		if ((unsigned char)*c <= ' ' || *c == 0x7f)
			*c = '_';

	/* Signals: SIGCHLD is blocked except while sleeping in ppoll. */
	sigset_t orig_mask, block, wait_mask;
	sigemptyset(&block);
	sigaddset(&block, SIGCHLD);
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		sigaddset(&block, forwarded[i]);
	sigprocmask(SIG_BLOCK, &block, &orig_mask);
	wait_mask = orig_mask;
	sigdelset(&wait_mask, SIGCHLD);
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		sigdelset(&wait_mask, forwarded[i]);

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_sigchld;
	sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
	sigaction(SIGCHLD, &sa, NULL);
	struct sigaction old_sa[sizeof(forwarded) / sizeof(forwarded[0])];
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++) {
		sigaction(forwarded[i], NULL, &old_sa[i]);
		if (old_sa[i].sa_handler == SIG_IGN)
			continue; /* ignored (e.g. nohup, background job): stays so for the child */
		memset(&sa, 0, sizeof(sa));
		sigemptyset(&sa.sa_mask);
		sa.sa_sigaction = forward_signal;
		sa.sa_flags = SA_SIGINFO | SA_RESTART;
		sigaction(forwarded[i], &sa, NULL);
	}

	/* Close-on-exec pipe: EOF means the exec succeeded, data is its errno. */
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) != 0) {
		fprintf(stderr, "%s: pipe: %s\n", prog, strerror(errno));
		return 2;
	}
	fflush(NULL);

	double t0 = now_s();
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "%s: fork: %s\n", prog, strerror(errno));
		return 2;
	}
	if (pid == 0) {
		close(pfd[0]);
		for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
			sigaction(forwarded[i], &old_sa[i], NULL);
		signal(SIGCHLD, SIG_DFL);
		sigprocmask(SIG_SETMASK, &orig_mask, NULL);
		if (alloc) {
			if (lib) {
				setenv("LD_PRELOAD", lib, 1);
			} else {
				unsetenv("LD_PRELOAD");
			}
			/* tidemalloc warns about unknown TIDE_* variables */
			if (is_tide)
				unsetenv("TIDE_LIB");
		}
		execvp(cmd[0], cmd);
		int e = errno;
		ssize_t w = write(pfd[1], &e, sizeof(e));
		(void)w;
		_exit(127);
	}
	close(pfd[1]);
	child_pid = pid;
	/* SIGINT & co. may be delivered from now on; SIGCHLD stays blocked. */
	{
		sigset_t fw;
		sigemptyset(&fw);
		for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
			if (!sigismember(&orig_mask, forwarded[i]))
				sigaddset(&fw, forwarded[i]);
		sigprocmask(SIG_UNBLOCK, &fw, NULL);
	}

	int exec_errno = 0;
	ssize_t r;
	do
		r = read(pfd[0], &exec_errno, sizeof(exec_errno));
	while (r < 0 && errno == EINTR);
	close(pfd[0]);

	long *rss = NULL;
	size_t n = 0, cap = 0;
	long rss_max = 0, rss_final = 0, pss = 0, uss = 0, pss_max = 0, uss_max = 0;
	double rss_sum = 0;
	int status = 0, exec_failed = r > 0;
	int lib_seen = 0, lib_checks = 0;
	struct pidset set = { NULL, 0, 0 };

	if (exec_failed) {
		fprintf(stderr, "%s: %s: %s\n", prog, cmd[0], strerror(exec_errno));
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	} else {
		const double period = (double)interval_ms / 1e3;
		double next = now_s();
		for (;;) {
			pid_t w = waitpid(pid, &status, WNOHANG);
			if (w == pid)
				break;
			if (w < 0 && errno != EINTR) {
				fprintf(stderr, "%s: waitpid: %s\n", prog, strerror(errno));
				status = 1 << 8;
				break;
			}

			/* one sample */
			double t = now_s();
			collect(&set, pid, tree);
			long kb = read_vmrss(pid);
			if (kb >= 0) { /* a zombie has no VmRSS: no sample */
				for (size_t i = 1; i < set.n; i++) {
					long k = read_vmrss(set.v[i]);
					if (k > 0)
						kb += k;
				}
				if (smaps_every > 0 && n % (size_t)smaps_every == 0) {
					long p = 0, u = 0, pp, uu;
					int ok = read_smaps(pid, &p, &u) == 0;
					for (size_t i = 1; ok && i < set.n; i++)
						if (read_smaps(set.v[i], &pp, &uu) == 0) {
							p += pp;
							u += uu;
						}
					if (ok) {
						pss = p;
						uss = u;
						if (pss > pss_max)
							pss_max = pss;
						if (uss > uss_max)
							uss_max = uss;
					}
				}
				if (n == cap) {
					cap = cap ? 2 * cap : 1024;
					rss = xrealloc(rss, cap * sizeof(long));
				}
				rss[n++] = kb;
				rss_sum += (double)kb;
				if (kb > rss_max)
					rss_max = kb;
				rss_final = kb;
				if (csv)
					fprintf(csv, "%.3f,%ld,%ld,%ld\n", (t - t0) * 1e3, kb, pss, uss);
				if (real_lib && !lib_seen) {
					lib_seen = lib_is_mapped(pid, real_lib);
					lib_checks++;
				}
			}

			/* sleep until the next deadline or until the child exits */
			next += period;
			double now = now_s();
			if (next < now)
				next = now; /* fell behind: no burst to catch up */
			int reaped = 0;
			while (!reaped && (now = now_s()) < next) {
				double d = next - now;
				struct timespec ts;
				ts.tv_sec = (time_t)d;
				ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
				got_sigchld = 0;
				ppoll(NULL, 0, &ts, &wait_mask);
				if (got_sigchld) {
					w = waitpid(pid, &status, WNOHANG);
					reaped = w == pid;
				}
			}
			if (reaped)
				break;
		}
	}
	double wall = now_s() - t0;
	child_pid = 0;

	int code;
	if (exec_failed)
		code = 127;
	else if (WIFEXITED(status))
		code = WEXITSTATUS(status);
	else if (WIFSIGNALED(status))
		code = 128 + WTERMSIG(status);
	else
		code = 1;

	if (real_lib && !lib_seen && lib_checks >= 5)
		fprintf(stderr, "%s: warning: %s was never seen mapped into %s: "
			"the preload did not take effect (static or setuid program?)\n",
			prog, real_lib, name);

	long p95 = 0;
	if (n > 0) {
		qsort(rss, n, sizeof(long), cmp_long);
		size_t k = (n * 95 + 99) / 100; /* ceil(n*95/100), >= 1 */
		p95 = rss[k - 1];
	}
	char line[1024 + PATH_MAX];
	snprintf(line, sizeof(line),
		 "tide-rss: samples=%zu rss_mean_kb=%.1f rss_p95_kb=%ld rss_max_kb=%ld "
		 "rss_final_kb=%ld pss_max_kb=%ld uss_max_kb=%ld exit=%d wall_s=%.3f cmd=%s\n",
		 n, n ? rss_sum / (double)n : 0.0, p95, rss_max, rss_final, pss_max, uss_max,
		 code, wall, name);

	int io_error = 0;
	if (csv && close_checked(csv) != 0) {
		fprintf(stderr, "%s: --csv %s: write error: %s\n", prog, csv_path, strerror(errno));
		io_error = 1;
	}
	if (sum && (fputs(line, sum) < 0 ? (fclose(sum), -1) : close_checked(sum)) != 0) {
		fprintf(stderr, "%s: --summary %s: write error: %s\n", prog, summary_path,
			strerror(errno));
		io_error = 1;
	}
	if (!quiet)
		fputs(line, stderr);
	free(rss);
	free(set.v);
	free(name);
	free(lib);
	free(real_lib);
	return io_error ? 2 : code;
}
