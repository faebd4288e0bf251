/* The stash: what a class's cache let go of when frees overflowed it, kept
 * as whole lists under the heap's lock (doc/design.md, "The stash").
 *
 * A cache that overflows used to send its older half to the spans' bitmaps,
 * and the next run of mallocs took blocks out of the bitmaps again: a
 * program that allocates a few hundred blocks and frees them all, over and
 * over (glibc-simple, rbstress), paid a bitmap update per block twice a
 * round. Growing the caches instead was fast (glibc-simple 1.30x with 1 MiB
 * of growth per heap) but cost memory: a cached block pins its page, and
 * nobody but the owner could touch its cache then (the claim covers the
 * caches since), so a thread that blocked kept them all (burst_idle: 53 MB
 * resident after idle against 22.6 MB).
 *
 * The stash has the speed of the second and not the cost: the overflowing
 * cache's list moves here as it is, without touching a block; a malloc
 * that finds its cache empty takes the newest list back whole. Both already
 * hold the heap's lock, and the lock is what lets the pager reach it: an
 * idle or blocked thread's stash goes back to the bitmaps with its remote
 * frees (src/trim.c), a scavenge sends back the stash of a class that
 * needed no refill, and the flushes that empty the caches empty it too.
 *
 * Lists are kept in descriptors in the heap (TM_STASH_LISTS of them), not
 * in the blocks: the blocks' first word links them as a cache does and the
 * second holds the free key, and 16-byte blocks have no third. */
#include "internal.h"

/* Take a free descriptor: its index, or -1 if all are in use. */
static int tm_stash_desc_new(tm_heap *h) {
  for (unsigned w = 0; w < TM_STASH_LISTS / 64; w++) {
    uint64_t free = ~h->stash_used[w];
    if (!free) continue;
    unsigned i = (unsigned)__builtin_ctzll(free);
    h->stash_used[w] |= (uint64_t)1 << i;
    return (int)(w * 64 + i);
  }
  return -1;
}

static bool tm_stash_desc_used(const tm_heap *h, unsigned i) {
  return (h->stash_used[i / 64] >> (i % 64)) & 1;
}

static void tm_stash_desc_drop(tm_heap *h, unsigned i) {
  TM_ASSERT(tm_stash_desc_used(h, i));
  h->stash_used[i / 64] &= ~((uint64_t)1 << (i % 64));
}

/* When the stash is full, the coldest class's lists (if it is cold: no slow
 * path of the heap was for it in the last TM_CLASS_COLD_AGE) go back to the
 * bitmaps to make room. A program that moves on to another size would
 * otherwise leave the budget to blocks it no longer asks for, and every
 * list of the new size would go to the bitmaps and come back out of them
 * (glibc-simple's configurations one after the other). The age keeps two
 * classes in use at once from evicting each other's lists in turn. False if
 * no class with a stash is cold. h->lock held. */
bool tm_stash_evict_cold(tm_heap *h) {
  unsigned coldest = TM_NUM_CLASSES;
  uint32_t oldest = TM_CLASS_COLD_AGE - 1u;
  for (unsigned k = 0; k < TM_NUM_CLASSES; k++) {
    uint32_t age = tm_class_age(h, k);
    if (h->stash_top[k] && age > oldest) {
      oldest = age;
      coldest = k;
    }
  }
  if (coldest == TM_NUM_CLASSES) return false;
  tm_stash_flush(h, coldest);
  return true;
}

/* Keep `list` (n blocks of class c, linked as caches link) as one list, if
 * a descriptor and the heap's budget allow; false, and nothing kept, if not.
 * h->lock held. */
bool tm_stash_put(tm_heap *h, unsigned c, void *list, unsigned n) {
  TM_ASSERT(tm_heap_locked(h));
  if (!list || !n) return false;
  size_t bytes = (size_t)n * tm_class_size(c), budget = tm_stash_budget(h);
  int i = -1;
  /* a list the whole budget cannot hold (16 blocks above 16 KiB at the
   * base) evicts nobody: it would find no room all the same */
  while (bytes > budget || h->stash_bytes + bytes > budget || (i = tm_stash_desc_new(h)) < 0) {
    if (bytes > budget || !tm_stash_evict_cold(h)) {
      h->stash_overflow = (uint8_t)(c + 1);
      h->stash_overflowed = 1;
      return false;
    }
  }
  tm_stash_list *l = &h->stash_lists[i];
  l->head = list;
  l->n = n;
  l->next = h->stash_top[c];
  h->stash_top[c] = (uint8_t)(i + 1);
  h->stash_bytes += bytes;
  return true;
}

/* The bytes of blocks the heap's lists may hold now. */
size_t tm_stash_budget(const tm_heap *h) {
  return TM_STASH_BYTES << h->stash_grow;
}

/* Class c's cache miss was served by its spans (h->lock held). If c's list
 * was the last to find no room, its blocks made the round trip through the
 * bitmaps: glibc-simple's rounds of 1,600 blocks of 256 or 512 bytes (400
 * and 800 KiB) ran at 1.3-1.8x tcmalloc's time per pair with the base
 * budget alone. */
void tm_stash_refilled(tm_heap *h, unsigned c) {
  if (h->stash_overflow != c + 1) return;
  h->stash_overflow = 0;
  if (h->stash_grow < TM_STASH_GROW_MAX) h->stash_grow++;
}

/* The scavenge's part (h->lock held): a heap whose lists all found room
 * since the last one needs less budget. */
void tm_stash_scavenged(tm_heap *h) {
  if (!h->stash_overflowed && h->stash_grow) h->stash_grow--;
  h->stash_overflowed = 0;
}

/* Unlink the newest list of class c (there is one) and free its descriptor. */
static tm_stash_list tm_stash_pop(tm_heap *h, unsigned c) {
  unsigned i = h->stash_top[c] - 1u;
  tm_stash_list l = h->stash_lists[i];
  h->stash_top[c] = l.next;
  tm_stash_desc_drop(h, i);
  h->stash_bytes -= (size_t)l.n * tm_class_size(c);
  return l;
}

/* The cache of class c is empty: the newest stashed list becomes it, and
 * its top block is returned; NULL if there is none. A list is never longer
 * than the cache's capacity: capacities change only with the cache
 * generation, which flushes the stash first. h->lock held, by the owner. */
void *tm_stash_take(tm_heap *h, unsigned c) {
  if (!h->stash_top[c] || tm_cache_n(&h->cache[c]) != 0) return NULL;
  tm_stash_list l = tm_stash_pop(h, c);
  TM_ASSERT(l.n <= h->cache[c].cap);
  return tm_cache_take_list(&h->cache[c], l.head, l.n);
}

/* Send every stashed list of class c back to the spans (h->lock held). Its
 * overflow is forgotten with them: a refill long after (a cold class's
 * lists were evicted, or a scavenge sent them back) is not a round trip
 * through the bitmaps, and must not grow the budget. */
void tm_stash_flush(tm_heap *h, unsigned c) {
  if (h->stash_overflow == c + 1) h->stash_overflow = 0;
  while (h->stash_top[c]) {
    tm_stash_list l = tm_stash_pop(h, c);
    unsigned sent = tm_blocks_release(h, l.head, TM_CACHE_LIMIT + 1);
    TM_ASSERT(sent == l.n);
    (void)sent;
  }
}

void tm_stashes_flush(tm_heap *h) {
  /* whoever wants every list back (a collect, the pager on an idle heap)
   * wants the budget back too: the next thrash grows it again */
  h->stash_grow = h->stash_overflow = 0;
  if (!h->stash_bytes) return;
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) tm_stash_flush(h, c);
  TM_ASSERT(h->stash_bytes == 0);
}

/* The heap check's look at the stash: every list in a descriptor in use,
 * as long as it says, of live blocks of its class; the bytes as counted. */
int tm_stash_check(tm_heap *h) {
  int problems = 0;
  size_t bytes = 0;
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) {
    unsigned lists = 0;
    for (unsigned i = h->stash_top[c]; i && lists < TM_STASH_LISTS; i = h->stash_lists[i - 1].next, lists++) {
      tm_stash_list *l = &h->stash_lists[i - 1];
      if (!tm_stash_desc_used(h, i - 1)) problems += tm_check_problem("stashed list in a free descriptor", l);
      if (tm_check_block_list(h, c, l->head, "stashed block is not a live block of its class") != l->n)
        problems += tm_check_problem("stashed list length differs from its count", l);
      bytes += (size_t)l->n * tm_class_size(c);
    }
  }
  if (bytes != h->stash_bytes) problems += tm_check_problem("stash bytes differ from its lists", &h->stash_bytes);
  return problems;
}

/* Is p in a stashed list of class c (h->lock held)? */
bool tm_stash_holds(const tm_heap *h, unsigned c, const void *p) {
  for (unsigned i = h->stash_top[c]; i; i = h->stash_lists[i - 1].next)
    if (tm_list_holds(h->stash_lists[i - 1].head, p)) return true;
  return false;
}
