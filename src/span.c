/* Spans of small blocks: a free bitmap kept in the span descriptor (out of
 * band), allocation lowest-address-first so that the tail pages of a span
 * empty out, and a lock-free list for blocks freed by other threads. */
#include "internal.h"

#include <string.h>

static unsigned tm_span_words(const tm_span *s) {
  return (s->capacity + 63) / 64;
}

/* Spans start on 64 KiB boundaries and fill from their lowest address, so
 * without care the hot first blocks of every class would all fall into the
 * same few L1 cache sets. Each span therefore starts at a "color" offset:
 * a multiple of the block size's power-of-two part (at least a cache line),
 * which keeps every block as aligned as its size promises to memalign, and
 * below TM_COLOR_RANGE, since every byte of offset can push blocks onto one
 * more page. Sizes with a power-of-two part of TM_COLOR_RANGE or more are
 * not colored. */
#define TM_COLOR_RANGE 1024
static size_t tm_span_color(size_t idx, size_t bsize) {
  size_t step = bsize & (~bsize + 1); /* lowest set bit */
  if (step < 64) step = 64;
  size_t colors = step >= TM_COLOR_RANGE ? 1 : TM_COLOR_RANGE / step;
  return ((idx * 7) % colors) * step;
}

/* The later slices' descriptors of a span of several slices mirror what
 * the free fast path reads, which never changes while the span lives (the
 * owner follows in tm_span_set_owner): the fast path starts at the
 * descriptor of the block's own slice, without the slice map
 * (tm_slice_desc). Without the mirror, a block past the first slice took
 * the slow path: random_medium (4-32 KiB blocks) ran 5-7% slower. */
static void tm_span_mirror(tm_span *s) {
  for (unsigned j = 1; j < s->slice_count; j++) {
    tm_span *m = &s[j];
    m->start = s->start;
    m->block_size = s->block_size;
    m->capacity = s->capacity;
    m->size_class = s->size_class;
    m->div_inv = s->div_inv;
    m->div_shift = s->div_shift;
  }
}

/* Does m hold what tm_span_mirror and tm_span_set_owner put there? */
static bool tm_span_mirrors(const tm_span *m, const tm_span *s) {
  return atomic_load_explicit(&((tm_span *)m)->heap, memory_order_relaxed) ==
             atomic_load_explicit(&((tm_span *)s)->heap, memory_order_relaxed) &&
         m->start == s->start && m->block_size == s->block_size && m->capacity == s->capacity &&
         m->size_class == s->size_class && m->div_inv == s->div_inv && m->div_shift == s->div_shift;
}

void tm_span_init_small(tm_span *s, unsigned c, tm_heap *owner) {
  tm_segment *seg = tm_segment_of_span(s);
  size_t idx = (size_t)(s - seg->spans);
  size_t bsize = tm_class_size(c);
  size_t color = tm_span_color(idx, bsize);
  size_t cap = (((size_t)s->slice_count << TM_SLICE_SHIFT) - color) / bsize;
  if (cap > TM_MAX_BLOCKS) cap = TM_MAX_BLOCKS;
  s->start = (uint8_t *)seg + (idx << TM_SLICE_SHIFT) + color;
  s->block_size = (uint32_t)bsize;
  s->capacity = (uint32_t)cap;
  s->used = 0;
  s->size_class = (uint8_t)c;
  unsigned k = (unsigned)__builtin_ctzll(bsize);
  uint64_t odd = bsize >> k, inv = odd;
  for (int i = 0; i < 5; i++) inv *= 2 - odd * inv; /* Newton: 3, 6, ..., 96 bits */
  s->div_inv = inv;
  s->div_shift = (uint8_t)k;
  s->large_size = 0;
  unsigned words = tm_span_words(s);
  if (words <= TM_INLINE_BITMAP_WORDS) s->bits = s->inline_bits;
  TM_ASSERT(s->bits != NULL); /* a bigger one comes with the slices (tm_slices_alloc) */
  memset(s->bits, 0xff, (size_t)words * sizeof(uint64_t));
  if (cap % 64) s->bits[words - 1] = ((uint64_t)1 << (cap % 64)) - 1;
  s->summary = words == 64 ? ~(uint64_t)0 : (((uint64_t)1 << words) - 1);
  s->queue = TM_Q_NONE;
  s->next = s->prev = NULL;
  TM_ASSERT(s->slice_count <= TM_SPAN_MASK_SLICES);
  tm_span_mirror(s);
  tm_span_set_owner(s, owner, false);
  tm_notice_init(s, owner != NULL);
  tm_span_pages *pg = tm_span_pg(s);
  TM_ASSERT(atomic_load(&pg->back) == 0); /* no release of a retired span is in flight */
  pg->purged = pg->seen_free = 0; /* (touched: set by tm_slices_alloc, from dirty slices) */
  atomic_store_explicit(&s->kind, TM_SPAN_SMALL, memory_order_release);
}

/* ---- the OS pages of a span ------------------------------------------------ */
tm_span_pages *tm_span_pg(tm_span *s) {
  tm_segment *seg = tm_segment_of_span(s);
  return &seg->span_pages[s - seg->spans];
}

static unsigned tm_span_npages(const tm_span *s) {
  return (unsigned)(((size_t)s->slice_count << TM_SLICE_SHIFT) >> TM_PAGE_SHIFT);
}

static size_t tm_span_offset(const tm_span *s) { /* of block 0 in the first slice */
  return (uintptr_t)s->start & (TM_SLICE_SIZE - 1);
}

uintptr_t tm_span_page_addr(tm_span *s, unsigned page) {
  return ((uintptr_t)s->start & ~(uintptr_t)(TM_SLICE_SIZE - 1)) + ((uintptr_t)page << TM_PAGE_SHIFT);
}

/* Blocks that overlap page p: [*first, *last]; false when none does (the
 * pages after the last block). */
static bool tm_page_blocks(const tm_span *s, unsigned p, uint32_t *first, uint32_t *last) {
  size_t off = tm_span_offset(s), lo = (size_t)p << TM_PAGE_SHIFT, hi = lo + TM_PAGE_SIZE - 1;
  if (hi < off) return false;
  size_t f = lo > off ? (lo - off) / s->block_size : 0;
  if (f >= s->capacity) return false;
  size_t l = (hi - off) / s->block_size;
  *first = (uint32_t)f;
  *last = (uint32_t)(l < s->capacity ? l : s->capacity - 1);
  return true;
}

/* Pages of blocks first..last, as a mask. */
static uint64_t tm_blocks_pages(const tm_span *s, uint32_t first, uint32_t last) {
  size_t off = tm_span_offset(s);
  unsigned pf = (unsigned)((off + (size_t)first * s->block_size) >> TM_PAGE_SHIFT);
  unsigned pl = (unsigned)((off + (size_t)(last + 1) * s->block_size - 1) >> TM_PAGE_SHIFT);
  return tm_run_mask(pf, pl - pf + 1);
}

static uint64_t tm_word_mask(uint32_t from, uint32_t to) { /* bits from..to of one word */
  uint64_t hi = to == 63 ? ~(uint64_t)0 : ((uint64_t)1 << (to + 1)) - 1;
  return hi & ~(((uint64_t)1 << from) - 1);
}

static bool tm_bits_all_set(const uint64_t *bits, uint32_t first, uint32_t last) {
  for (uint32_t w = first >> 6; w <= last >> 6; w++) {
    uint32_t from = w == first >> 6 ? first & 63 : 0, to = w == last >> 6 ? last & 63 : 63;
    uint64_t m = tm_word_mask(from, to);
    if ((bits[w] & m) != m) return false;
  }
  return true;
}

/* Set (or clear) bits first..last; returns how many changed. */
static unsigned tm_bits_put(uint64_t *bits, uint32_t first, uint32_t last, bool set) {
  unsigned changed = 0;
  for (uint32_t w = first >> 6; w <= last >> 6; w++) {
    uint32_t from = w == first >> 6 ? first & 63 : 0, to = w == last >> 6 ? last & 63 : 63;
    uint64_t m = tm_word_mask(from, to);
    uint64_t flip = set ? m & ~bits[w] : m & bits[w];
    changed += (unsigned)__builtin_popcountll(flip);
    bits[w] ^= flip;
  }
  return changed;
}

/* Pages that hold blocks, every one of them free in the bitmap. O(pages +
 * words), reads only the descriptor and its bitmap.
 *
 * Pages after the last block are not among them, though a former span may
 * have left data there: taking a page out of circulation must pin the span
 * (its blocks count as used until the page comes back), and a page with no
 * block pins nothing. The span could then be retired and its slices reused
 * by a new span whose block covers that page, while the kernel zeroes it
 * (test_pager tail_race: 4 of 5 runs lost a block's contents or handed it
 * out twice). Those pages go back with the slices, when the span retires. */
uint64_t tm_span_free_pages(tm_span *s) {
  uint64_t m = 0;
  unsigned np = tm_span_npages(s);
  uint32_t first, last;
  for (unsigned p = 0; p < np; p++)
    if (tm_page_blocks(s, p, &first, &last) && tm_bits_all_set(tm_span_bits(s), first, last)) m |= (uint64_t)1 << p;
  return m;
}

/* Take the blocks on `pages` (all free, at least one each) out of
 * circulation for a purge: their bits are cleared and they count as used, so
 * no refill hands one out and the span is not retired, until
 * tm_span_pages_back. */
unsigned tm_span_reserve_pages(tm_span *s, uint64_t pages) {
  unsigned n = 0;
  uint32_t first, last;
  for (uint64_t m = pages; m; m &= m - 1)
    if (tm_page_blocks(s, (unsigned)__builtin_ctzll(m), &first, &last)) n += tm_bits_put(tm_span_bits(s), first, last, false);
  TM_ASSERT(n > 0); /* the pin that keeps the span alive while the kernel has the pages */
  s->used = (uint16_t)(s->used + n);
  tm_span_refresh(s);
  return n;
}

/* Pages a release has purged come back: their blocks are free again, and
 * the pages are marked purged, so that handing one out again is counted as
 * a refault. The span's lock is held. */
static void tm_span_pages_back(tm_span *s) {
  tm_span_pages *pg = tm_span_pg(s);
  uint64_t pages = atomic_exchange_explicit(&pg->back, 0, memory_order_acquire);
  unsigned n = 0;
  uint32_t first, last;
  for (uint64_t m = pages; m; m &= m - 1)
    if (tm_page_blocks(s, (unsigned)__builtin_ctzll(m), &first, &last)) n += tm_bits_put(tm_span_bits(s), first, last, true);
  TM_ASSERT(n <= s->used);
  s->used = (uint16_t)(s->used - n);
  pg->purged |= pages;
  pg->seen_free &= ~pages;
  pg->touched &= ~pages;
  tm_span_refresh(s);
}

unsigned tm_span_pop_batch(tm_span *s, void **out, unsigned n) {
  uint64_t sum = s->summary;
  uint64_t *bits = tm_span_bits(s);
  unsigned got = 0;
  while (got < n && sum) {
    unsigned wi = (unsigned)__builtin_ctzll(sum);
    uint64_t w = bits[wi];
    while (got < n && w) {
      unsigned b = (unsigned)__builtin_ctzll(w);
      w &= w - 1;
      out[got++] = s->start + (size_t)(wi * 64u + b) * s->block_size;
    }
    bits[wi] = w;
    if (!w) sum &= sum - 1; /* (also drops a summary bit that was only a hint) */
  }
  s->summary = sum;
  TM_ASSERT(s->used + got <= s->capacity && tm_span_kind(s) == TM_SPAN_SMALL);
  s->used = (uint16_t)(s->used + got);
  if (got) {
    /* the pages these blocks are on are in use again: not free since the
     * pager's last look, not purged any more (a refault if they were), and
     * resident as far as the census can tell */
    tm_span_pages *pg = tm_span_pg(s);
    uint32_t first = (uint32_t)(((uint8_t *)out[0] - s->start) / s->block_size);
    uint32_t last = (uint32_t)(((uint8_t *)out[got - 1] - s->start) / s->block_size);
    uint64_t touched = 0;
    if (last - first + 1 == got) {
      touched = tm_blocks_pages(s, first, last); /* the usual batch: consecutive blocks */
    } else {
      for (unsigned i = 0; i < got; i++) {
        uint32_t idx = (uint32_t)(((uint8_t *)out[i] - s->start) / s->block_size);
        touched |= tm_blocks_pages(s, idx, idx);
      }
    }
    uint64_t refault = pg->purged & touched;
    if (refault) TM_STAT_ADD(refault_bytes, (size_t)__builtin_popcountll(refault) << TM_PAGE_SHIFT);
    pg->purged &= ~touched;
    pg->seen_free &= ~touched;
    pg->touched |= touched;
  }
  return got;
}

bool tm_span_refresh(tm_span *s) {
  uint64_t sum = 0;
  unsigned words = tm_span_words(s);
  for (unsigned i = 0; i < words; i++)
    if (tm_span_bits(s)[i]) sum |= (uint64_t)1 << i;
  s->summary = sum;
  return sum != 0;
}

/* Mark block idx (at p) free in the bitmap. */
bool tm_span_free_block(tm_span *s, void *p, uint32_t idx) {
  TM_ASSERT(tm_span_kind(s) == TM_SPAN_SMALL && idx < s->capacity);
  TM_ASSERT((uint8_t *)p == s->start + (size_t)idx * s->block_size);
  uint64_t bit = (uint64_t)1 << (idx & 63);
  uint64_t *word = &tm_span_bits(s)[idx >> 6];
  if (*word & bit) {
    tm_report_invalid("free", p, "double free");
    return false;
  }
#if TIDE_DEBUG
  memset(p, tm_perturb() ? tm_perturb() : 0xdf, s->block_size); /* M_PERTURB's byte wins */
#endif
  *word |= bit;
  s->summary |= (uint64_t)1 << (idx >> 6);
  TM_ASSERT(s->used > 0); /* a live block was counted */
  s->used--;
  s->changed = 1;
  return true;
}

void tm_span_collect(tm_span *s) {
  tm_span_collect_word(s, tm_span_take_remote(s));
}

/* Put what was taken from thread_free back into the bitmap: the blocks
 * other threads freed, and the pages the pager gave back (the span's lock
 * is held). */
void tm_span_collect_word(tm_span *s, uintptr_t taken) {
  if (taken & TM_TF_BACK) tm_span_pages_back(s);
  tm_block *b = (tm_block *)(taken & ~(uintptr_t)7);
  while (b) {
    tm_block *next = b->next;
    uint32_t idx;
    if (!tm_span_block_index(s, b, &idx)) {
      tm_report_invalid("free", b, "corrupted cross-thread free list at");
      return;
    }
    /* freed twice by other threads: the list may now loop, drop the rest */
    if (!tm_span_free_block(s, b, idx)) return;
    b = next;
  }
}

/* The last step of every retirement (an owner's empty span, an exited
 * thread's, an empty orphan): the slices go back to the segment. Global
 * lock held; returns the bytes. */
size_t tm_span_free_slices(tm_span *s) {
  TM_ASSERT(s->used == 0 && tm_lock_is_held(&tm_global_lock));
  size_t bytes = (size_t)s->slice_count << TM_SLICE_SHIFT;
  TM_STAT_SUB(span_bytes, bytes);
  tm_slices_free(s);
  return bytes;
}

void tm_span_retire(tm_span *s) {
  TM_ASSERT(s->used == 0);
  unsigned was = tm_notice_close(s, false);
  TM_ASSERT(was == TM_NOTICE_IDLE || was == TM_NOTICE_NEVER); /* never on a remote list */
  (void)was;
  tm_span_set_owner(s, NULL, false);
  tm_lock(&tm_global_lock);
  tm_span_free_slices(s);
  tm_unlock(&tm_global_lock);
}

/* Whether a span of class c needs a bitmap outside its descriptor. */
bool tm_class_needs_bitmap(unsigned c, unsigned nslices) {
  size_t cap = ((size_t)nslices << TM_SLICE_SHIFT) / tm_class_size(c);
  return cap > (size_t)TM_INLINE_BITMAP_WORDS * 64;
}

/* After fork, for the spans of heaps abandoned in the child: the bitmap is
 * the truth (a block cut out of a cache list in the fork can never reach
 * anyone in the child): recount from it. */
void tm_span_resync(tm_span *s) {
  uint32_t free_blocks = 0;
  unsigned words = tm_span_words(s);
  for (unsigned i = 0; i < words; i++) free_blocks += (uint32_t)__builtin_popcountll(tm_span_bits(s)[i]);
  s->used = (uint16_t)(s->capacity - free_blocks);
  tm_span_refresh(s);
}

int tm_span_check(tm_span *s, tm_heap *expected_owner) {
  int problems = 0;
  if (tm_span_kind(s) != TM_SPAN_SMALL) return tm_check_problem("queued span is not a small span", s);
  if (tm_span_owner(s) != expected_owner) problems += tm_check_problem("span owner is not this heap", s);
  if ((atomic_load_explicit(&s->heap, memory_order_relaxed) & TM_HEAP_FULL_TAG) != (s->queue == TM_Q_FULL)) problems += tm_check_problem("full tag does not match the queue", s);
  if (s->block_size != tm_class_size(s->size_class)) problems += tm_check_problem("block size does not match the class", s);
  unsigned words = tm_span_words(s);
  uint32_t free_blocks = 0;
  for (unsigned i = 0; i < words; i++) {
    uint64_t w = tm_span_bits(s)[i];
    if (i == words - 1 && (s->capacity % 64) && (w >> (s->capacity % 64))) problems += tm_check_problem("free bit beyond capacity", s);
    if (i < words && w && !(s->summary & ((uint64_t)1 << i))) problems += tm_check_problem("summary misses a nonzero bitmap word", s);
    free_blocks += (uint32_t)__builtin_popcountll(w);
  }
  if (free_blocks + s->used != s->capacity) problems += tm_check_problem("free bits + used != capacity", s);
  tm_segment *seg = tm_segment_of_span(s);
  unsigned idx = (unsigned)(s - seg->spans);
  for (unsigned j = idx; j < idx + s->slice_count && j < TM_SLICES; j++)
    if (seg->slice_map[j] != idx) problems += tm_check_problem("slice map does not point at the span", s);
  for (unsigned j = idx + 1; j < idx + s->slice_count && j < TM_SLICES; j++)
    if (!tm_span_mirrors(&seg->spans[j], s))
      problems += tm_check_problem("a later slice's descriptor does not mirror the span", s);
  return problems;
}
