/* Introspection and control: the glibc-compatible calls (mallinfo2, mallinfo,
 * malloc_stats, malloc_info, mallopt, malloc_trim) and tidemalloc's own
 * (tidemalloc.h). All figures describe tidemalloc's memory, span-granular. */
#include "internal.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>

TM_API const char *tide_version(void) { return TIDEMALLOC_VERSION; }

/* LazyFree of /proc/self/smaps_rollup, in bytes: what was given with
 * MADV_FREE and is still resident (no stdio: no malloc; no cancellation point). */
static size_t tm_lazyfree_bytes(void) {
  char buf[2048];
  if (tm_read_small("/proc/self/smaps_rollup", buf, sizeof buf) <= 0) return 0;
  const char *p = strstr(buf, "LazyFree:");
  if (!p) return 0;
  size_t kb = 0;
  for (p += 9; *p == ' '; p++) {
  }
  for (; *p >= '0' && *p <= '9'; p++) kb = kb * 10 + (size_t)(*p - '0');
  return kb << 10;
}

TM_API void tide_get_stats(struct tide_stats *out) {
  int saved = errno;
  memset(out, 0, sizeof *out);
  out->mapped_bytes = TM_STAT_GET(mapped_bytes);
  out->segment_count = TM_STAT_GET(segment_count);
  out->cached_segments = tm_segments_empty_count();
  out->span_bytes = TM_STAT_GET(span_bytes);
  out->huge_count_max = TM_STAT_GET(huge_count_max);
  out->huge_bytes_max = TM_STAT_GET(huge_bytes_max);
  out->large_bytes = TM_STAT_GET(large_bytes);
  out->huge_bytes = TM_STAT_GET(huge_bytes);
  out->huge_count = TM_STAT_GET(huge_count);
  out->heap_count = TM_STAT_GET(heap_count);
  tm_census c;
  tm_census_take(&c);
  out->resident_bytes = c.resident;
  out->cached_bytes = c.cached;
  out->span_used_bytes = c.span_used;
  out->span_free_bytes = c.span_free;
  out->free_unpurged_bytes = c.pages_unpurged + c.slices_dirty + c.huge_cached;
  out->free_purged_bytes = c.pages_purged + c.slices_purged;
  out->header_bytes = c.header;
  out->huge_cached_bytes = c.huge_cached;
  out->segments_released = TM_STAT_GET(segments_released);
  out->purged_bytes = TM_STAT_GET(purged_bytes);
  out->refault_bytes = TM_STAT_GET(refault_bytes);
  out->slices_reused_bytes = TM_STAT_GET(slices_reused);
  out->huge_reused = TM_STAT_GET(huge_reused);
  out->pager_mode = tm_release_mode_name();
  unsigned rb = tm_release_backend();
  out->release_backend = rb == TM_REL_BACKEND_PMADV ? "process_madvise" : rb == TM_REL_BACKEND_MADV ? "madvise" : "none";
  tm_pager_stats ps;
  tm_pager_get_stats(&ps);
  out->purged_dontneed_bytes = ps.purged_dontneed;
  out->purged_free_bytes = ps.purged_free;
  if (ps.purged_free) out->lazyfree_bytes = tm_lazyfree_bytes();
  out->pager_running = ps.loop != TM_LOOP_NONE;
  out->pager_loop = tm_pager_loop_name(ps.loop);
  out->pager_psi = (int)ps.psi;
  out->pager_started = ps.started;
  out->pager_wakeups = ps.wakeups;
  out->pager_rounds = ps.rounds;
  out->pager_batches = ps.batches;
  out->pager_syscalls = ps.syscalls;
  out->pager_cpu_ns = ps.cpu_ns;
  out->pager_pressure_events = ps.pressure;
  out->pager_tight_rounds = ps.tight;
  out->memory_limit = ps.limit;
  out->pager_delay_ms = (size_t)ps.delay_ms;
  out->pager_delay_raised = (size_t)ps.raised;
  out->numa_nodes = (int)tm_numa_nodes();
  out->outbox_claims = TM_STAT_GET(outbox_claims);
  out->outbox_claims_busy = TM_STAT_GET(outbox_claims_busy);
  errno = saved;
}

TM_API size_t tide_collect(void) {
  tm_heap_collect_all(tm_heap_tls);
  tm_lock(&tm_global_lock);
  tm_orphans_sweep();
  tm_unlock(&tm_global_lock);
  tm_trim_req req = {.now_ms = tm_now_ms(), .empty_only = true, .keep_no_empty = true};
  return tm_pager_trim_now(&req);
}

/* The whole process: this thread's caches first (no other thread can take
 * them), then every heap as if idle, orphans, free slices, empty segments
 * and the huge cache, with no delay. Other threads' caches are asked back
 * and go on their owners' next slow path. */
TM_API size_t tide_purge(void) {
  tm_heap_collect_all(tm_heap_tls);
  return tm_pager_purge_all();
}

TM_API int tide_heap_check(void) {
  int problems = tm_heap_check(tm_heap_tls) + tm_segments_check();
  if (problems) {
    char storage[24];
    TM_LINE(num, storage);
    tm_line_add_u64(&num, (uint64_t)problems);
    tm_warn("heap consistency check found problems: ", num.buf);
  }
  return problems;
}

TM_API int malloc_trim(size_t pad) {
  (void)pad;
  return tide_purge() > 0;
}

/* Segment bytes not handed to spans or large blocks count as free. */
TM_API struct mallinfo2 mallinfo2(void) {
  struct tide_stats st;
  tide_get_stats(&st);
  struct mallinfo2 mi;
  memset(&mi, 0, sizeof mi);
  size_t seg_bytes = st.segment_count * TM_SEG_SIZE;
  size_t used = st.span_bytes + st.large_bytes;
  mi.arena = seg_bytes;
  mi.ordblks = st.segment_count;
  mi.hblks = st.huge_count;
  mi.hblkhd = st.huge_bytes;
  mi.uordblks = used + st.huge_bytes;
  mi.fordblks = seg_bytes > used ? seg_bytes - used : 0;
  mi.keepcost = st.cached_segments * TM_SEG_SIZE;
  return mi;
}

/* glibc's older call, with int fields: mallinfo2's figures converted to int
 * the way glibc's own mallinfo converts them (each field assigned to its int,
 * so a figure past 2 GiB wraps there as it does under glibc). Without it, a
 * program calling mallinfo would read glibc's empty heap. */
TM_API struct mallinfo mallinfo(void) {
  struct mallinfo2 m2 = mallinfo2();
  struct mallinfo m;
  m.arena = (int)m2.arena;
  m.ordblks = (int)m2.ordblks;
  m.smblks = (int)m2.smblks;
  m.hblks = (int)m2.hblks;
  m.hblkhd = (int)m2.hblkhd;
  m.usmblks = (int)m2.usmblks;
  m.fsmblks = (int)m2.fsmblks;
  m.uordblks = (int)m2.uordblks;
  m.fordblks = (int)m2.fordblks;
  m.keepcost = (int)m2.keepcost;
  return m;
}

/* One line of malloc_stats: label, then value right-aligned in `width`
 * characters (0: as it comes). */
static void tm_stats_row(const char *label, size_t value, size_t width) {
  char storage[128], num[24];
  TM_LINE(digits, num);
  tm_line_add_u64(&digits, (uint64_t)value);
  TM_LINE(line, storage);
  tm_line_add(&line, label);
  for (size_t pad = digits.len; pad < width; pad++) tm_line_add(&line, " ");
  tm_line_add(&line, digits.buf);
  tm_line_add(&line, "\n");
  tm_write_str(2, line.buf);
}

/* Written with the write system call (src/sysio.c): usable at exit, with
 * stdio locked, and with a cancellation pending. Grouped as
 * tide_stats is: what is mapped, where the heap's bytes sit, what was given
 * back, and the pager. */
TM_API void malloc_stats(void) {
  struct tide_stats st;
  tide_get_stats(&st);
  tm_write_str(2, "tidemalloc " TIDEMALLOC_VERSION " statistics (pager mode ");
  tm_write_str(2, st.pager_mode);
  tm_write_str(2, ", pager loop ");
  tm_write_str(2, st.pager_loop);
  tm_write_str(2, ", release ");
  tm_write_str(2, st.release_backend);
  tm_write_str(2, ")\n");
  const struct {
    const char *label;
    size_t value;
  } rows[] = {
      {"system bytes        = ", st.mapped_bytes},
      {"in use bytes        = ", st.span_bytes + st.large_bytes + st.huge_bytes},
      {"segments            = ", st.segment_count},
      {"  empty, kept       = ", st.cached_segments},
      {"small span bytes    = ", st.span_bytes},
      {"large bytes         = ", st.large_bytes},
      {"huge bytes          = ", st.huge_bytes},
      {"huge blocks         = ", st.huge_count},
      {"heaps               = ", st.heap_count},
      {"resident bytes      = ", st.resident_bytes},
      {"  cached blocks     = ", st.cached_bytes},
      {"  used in spans     = ", st.span_used_bytes},
      {"  free in spans     = ", st.span_free_bytes},
      {"  free, resident    = ", st.free_unpurged_bytes},
      {"  segment headers   = ", st.header_bytes},
      {"  huge cache        = ", st.huge_cached_bytes},
      {"free, given back    = ", st.free_purged_bytes},
      {"purged bytes        = ", st.purged_bytes},
      {"  with DONTNEED     = ", st.purged_dontneed_bytes},
      {"  with FREE         = ", st.purged_free_bytes},
      {"  FREE not yet taken= ", st.lazyfree_bytes},
      {"refaulted bytes     = ", st.refault_bytes},
      {"purged slices reused= ", st.slices_reused_bytes},
      {"huge blocks reused  = ", st.huge_reused},
      {"outboxes taken      = ", st.outbox_claims},
      {"segments unmapped   = ", st.segments_released},
      {"pager running       = ", (size_t)st.pager_running},
      {"pager psi           = ", (size_t)st.pager_psi},
      {"pager wakeups       = ", st.pager_wakeups},
      {"pager rounds        = ", st.pager_rounds},
      {"pager batches       = ", st.pager_batches},
      {"release syscalls    = ", st.pager_syscalls},
      {"pager cpu ns        = ", st.pager_cpu_ns},
      {"pressure events     = ", st.pager_pressure_events},
      {"rounds near limit   = ", st.pager_tight_rounds},
      {"memory limit        = ", st.memory_limit},
      {"pager delay ms      = ", st.pager_delay_ms},
      {"  times raised      = ", st.pager_delay_raised},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) tm_stats_row(rows[i].label, rows[i].value, 0);
  /* glibc's summary, in glibc's layout (programs and tests read it): one
   * "arena", the segments; the total with the huge blocks, glibc's mmapped
   * chunks. Figures as glibc prints them: unsigned int, max mmap bytes
   * unsigned long, in %10 fields. */
  const struct {
    const char *label;
    size_t value;
  } glibc_rows[] = {
      {"Arena 0:\nsystem bytes     = ", (unsigned int)(st.segment_count * TM_SEG_SIZE)},
      {"in use bytes     = ", (unsigned int)(st.span_bytes + st.large_bytes)},
      {"Total (incl. mmap):\nsystem bytes     = ", (unsigned int)st.mapped_bytes},
      {"in use bytes     = ", (unsigned int)(st.span_bytes + st.large_bytes + st.huge_bytes)},
      {"max mmap regions = ", (unsigned int)st.huge_count_max},
      {"max mmap bytes   = ", st.huge_bytes_max},
  };
  for (size_t i = 0; i < sizeof glibc_rows / sizeof glibc_rows[0]; i++)
    tm_stats_row(glibc_rows[i].label, glibc_rows[i].value, 10);
}

TM_API int malloc_info(int options, FILE *fp) {
  if (options != 0 || !fp) {
    errno = EINVAL;
    return -1;
  }
  struct tide_stats st;
  tide_get_stats(&st);
  fprintf(fp,
          "<malloc version=\"tidemalloc-%s\">\n"
          "<pager mode=\"%s\" loop=\"%s\" release=\"%s\" running=\"%d\" psi=\"%d\" wakeups=\"%zu\" "
          "rounds=\"%zu\" batches=\"%zu\" syscalls=\"%zu\" cpu_ns=\"%zu\" pressure=\"%zu\" "
          "limit=\"%zu\" delay_ms=\"%zu\" delay_raised=\"%zu\"/>\n"
          "<segments count=\"%zu\" cached=\"%zu\" unmapped=\"%zu\"/>\n"
          "<spans small=\"%zu\" large=\"%zu\"/>\n"
          "<huge count=\"%zu\" size=\"%zu\" cached=\"%zu\" reused=\"%zu\"/>\n"
          "<heaps count=\"%zu\"/>\n"
          "<resident total=\"%zu\" cached=\"%zu\" used=\"%zu\" free=\"%zu\" free_resident=\"%zu\" "
          "headers=\"%zu\"/>\n"
          "<purged now=\"%zu\" total=\"%zu\" dontneed=\"%zu\" free=\"%zu\" lazyfree=\"%zu\" "
          "refaulted=\"%zu\" slices_reused=\"%zu\"/>\n"
          "<system type=\"current\" size=\"%zu\"/>\n"
          "</malloc>\n",
          TIDEMALLOC_VERSION, st.pager_mode, st.pager_loop, st.release_backend, st.pager_running, st.pager_psi,
          st.pager_wakeups, st.pager_rounds, st.pager_batches, st.pager_syscalls, st.pager_cpu_ns,
          st.pager_pressure_events, st.memory_limit, st.pager_delay_ms, st.pager_delay_raised, st.segment_count, st.cached_segments, st.segments_released,
          st.span_bytes, st.large_bytes, st.huge_count, st.huge_bytes, st.huge_cached_bytes, st.huge_reused,
          st.heap_count, st.resident_bytes, st.cached_bytes, st.span_used_bytes, st.span_free_bytes,
          st.free_unpurged_bytes, st.header_bytes, st.free_purged_bytes, st.purged_bytes, st.purged_dontneed_bytes,
          st.purged_free_bytes, st.lazyfree_bytes, st.refault_bytes, st.slices_reused_bytes, st.mapped_bytes);
  return 0;
}

/* M_MMAP_THRESHOLD moves the boundary between page runs and own mappings;
 * M_TRIM_THRESHOLD/M_TOP_PAD/M_MMAP_MAX/M_ARENA_* are accepted and have no
 * equivalent here; so is M_CHECK_ACTION, which glibc itself has ignored since
 * 2.34 (tidemalloc's reaction to bad input is TIDE_ABORT_ON_ERROR), and
 * M_MXFAST within glibc's range (0..160: fastbins; our small classes are
 * always cached), each answered as glibc answers it. Anything else is
 * rejected (0), as glibc does. M_PERTURB fills blocks as glibc does
 * (heap.c, tm_perturb_set). */
#define TM_GLIBC_MAX_FAST_SIZE (80 * (int)sizeof(size_t) / 4) /* glibc's MAX_FAST_SIZE */

TM_API int mallopt(int param, int value) {
  switch (param) {
    case M_MMAP_THRESHOLD: {
      if (value < 0) return 0;
      size_t v = (size_t)value;
      if (v < TM_SMALL_MAX) v = TM_SMALL_MAX;
      if (v > (TM_SLICES - 2) * TM_SLICE_SIZE) v = (TM_SLICES - 2) * TM_SLICE_SIZE;
      atomic_store_explicit(&tm_huge_threshold_v, v, memory_order_relaxed);
      return 1;
    }
    case M_TRIM_THRESHOLD:
    case M_TOP_PAD:
    case M_MMAP_MAX:
    case M_ARENA_MAX:
    case M_ARENA_TEST:
    case M_CHECK_ACTION:
      return 1;
    case M_MXFAST:
      return value >= 0 && value <= TM_GLIBC_MAX_FAST_SIZE;
    case M_PERTURB:
      tm_init();
      tm_perturb_set(value);
      tm_heap_catch_up();
      return 1;
    default:
      return 0;
  }
}
