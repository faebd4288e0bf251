/* Introspection and control: the glibc-compatible calls (mallinfo2,
 * malloc_stats, malloc_info, mallopt, malloc_trim) and tidemalloc's own
 * (tidemalloc.h). All figures describe tidemalloc's memory, span-granular. */
#include "internal.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>

TM_API const char *tide_version(void) { return TIDEMALLOC_VERSION; }

TM_API void tide_get_stats(struct tide_stats *out) {
  memset(out, 0, sizeof *out);
  out->mapped_bytes = TM_STAT_GET(mapped_bytes);
  out->segment_count = TM_STAT_GET(segment_count);
  out->cached_segments = TM_STAT_GET(cached_segments);
  out->span_bytes = TM_STAT_GET(span_bytes);
  out->large_bytes = TM_STAT_GET(large_bytes);
  out->huge_bytes = TM_STAT_GET(huge_bytes);
  out->huge_count = TM_STAT_GET(huge_count);
  out->heap_count = TM_STAT_GET(heap_count);
  out->segments_released = TM_STAT_GET(segments_released);
  out->purged_bytes = TM_STAT_GET(purged_bytes);
  out->pager_mode = tm_release_mode_name();
  tm_pager_stats ps;
  tm_pager_get_stats(&ps);
  out->pager_running = ps.loop != TM_LOOP_NONE;
  out->pager_loop = tm_pager_loop_name(ps.loop);
  out->pager_started = ps.started;
  out->pager_wakeups = ps.wakeups;
  out->pager_rounds = ps.rounds;
  out->pager_batches = ps.batches;
  out->pager_syscalls = ps.syscalls;
  out->pager_cpu_ns = ps.cpu_ns;
  out->pager_pressure_events = ps.pressure;
  out->pager_tight_rounds = ps.tight;
  out->memory_limit = ps.limit;
  out->pager_psi = (int)ps.psi;
  unsigned rb = tm_release_backend();
  out->release_backend = rb == TM_REL_BACKEND_PMADV ? "process_madvise" : rb == TM_REL_BACKEND_MADV ? "madvise" : "none";
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

/* Written with write(2): usable at exit and with stdio locked. */
TM_API void malloc_stats(void) {
  struct tide_stats st;
  tide_get_stats(&st);
  tm_write_str(2, "tidemalloc " TIDEMALLOC_VERSION " statistics (pager mode ");
  tm_write_str(2, st.pager_mode);
  tm_write_str(2, ")\n");
  const struct {
    const char *label;
    size_t value;
  } rows[] = {
      {"system bytes     = ", st.mapped_bytes},     {"in use bytes     = ", st.span_bytes + st.large_bytes + st.huge_bytes},
      {"segments         = ", st.segment_count},    {"cached segments  = ", st.cached_segments},
      {"small span bytes = ", st.span_bytes},       {"large bytes      = ", st.large_bytes},
      {"huge bytes       = ", st.huge_bytes},       {"huge blocks      = ", st.huge_count},
      {"heaps            = ", st.heap_count},       {"segments unmapped= ", st.segments_released},
      {"purged bytes     = ", st.purged_bytes},     {"pager running    = ", (size_t)st.pager_running},
      {"pager wakeups    = ", st.pager_wakeups},    {"pager rounds     = ", st.pager_rounds},
      {"pager batches    = ", st.pager_batches},    {"release syscalls = ", st.pager_syscalls},
      {"pager cpu ns     = ", st.pager_cpu_ns},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    char storage[128];
    TM_LINE(line, storage);
    tm_line_add(&line, rows[i].label);
    tm_line_add_u64(&line, rows[i].value);
    tm_line_add(&line, "\n");
    tm_write_str(2, line.buf);
  }
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
          "<pager mode=\"%s\"/>\n"
          "<segments count=\"%zu\" cached=\"%zu\" unmapped=\"%zu\"/>\n"
          "<spans small=\"%zu\" large=\"%zu\"/>\n"
          "<huge count=\"%zu\" size=\"%zu\"/>\n"
          "<heaps count=\"%zu\"/>\n"
          "<system type=\"current\" size=\"%zu\"/>\n"
          "<purged size=\"%zu\"/>\n"
          "</malloc>\n",
          TIDEMALLOC_VERSION, st.pager_mode, st.segment_count, st.cached_segments, st.segments_released,
          st.span_bytes, st.large_bytes, st.huge_count, st.huge_bytes, st.heap_count, st.mapped_bytes,
          st.purged_bytes);
  return 0;
}

/* M_MMAP_THRESHOLD moves the boundary between page runs and own mappings;
 * M_TRIM_THRESHOLD/M_TOP_PAD/M_MMAP_MAX/M_ARENA_* are accepted and have no
 * equivalent here; anything else is rejected (0), as glibc does. */
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
      return 1;
    default:
      return 0;
  }
}
