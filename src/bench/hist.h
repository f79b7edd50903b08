/*
 * hist.h — a log-linear latency histogram in the HdrHistogram layout.
 *
 * Values (d11 bench records microseconds) go into buckets whose width doubles from one
 * bucket to the next; each bucket is split into the same number of linear sub-buckets, so
 * every recorded value is kept with a fixed RELATIVE precision: with 3 significant digits
 * the sub-bucket holding v is at most v/1000 wide, whether v is 40 µs or 40 s. Memory is
 * fixed at init (about 190 KB for 1 µs .. 1 h at 3 digits) and recording is a few shifts
 * and one increment: no allocation, no search.
 *
 * Layout (same arithmetic as HdrHistogram, written from its published description):
 *   sub_bucket_count      = 2^ceil(log2(2 * 10^digits))   (2048 for 3 digits)
 *   bucket 0              covers [0, sub_bucket_count << unit) in sub_bucket_count slots
 *   bucket b >= 1         covers [half << (b + unit), half << (b + 1 + unit)) in `half`
 *                         slots of width 2^(b + unit)   (half = sub_bucket_count / 2)
 *   counts[]              bucket 0's slots, then the upper half of every further bucket
 * where unit = floor(log2(lowest)). Two histograms with the same (lowest, highest, digits)
 * have the same layout and can be merged by adding their counts, which is how per-thread
 * histograms become one result.
 *
 * Values above `highest` are recorded as `highest` and counted in `saturated`; negative
 * values are recorded as 0. Not thread-safe: a histogram belongs to one thread; merge
 * after joining (or under the owner's lock).
 */
#ifndef D11_BENCH_HIST_H
#define D11_BENCH_HIST_H

#include <stddef.h>
#include <stdint.h>

typedef struct d11_hist {
    int64_t  lowest;        /* lowest discernible value, >= 1 */
    int64_t  highest;       /* highest trackable value, >= 2 * lowest */
    int      digits;        /* significant decimal digits kept, 1..5 */
    int      unit_magnitude;            /* floor(log2(lowest)) */
    int      sub_bucket_half_magnitude; /* log2(sub_bucket_count) - 1 */
    int32_t  sub_bucket_count;
    int32_t  sub_bucket_half_count;
    int64_t  sub_bucket_mask;           /* (sub_bucket_count - 1) << unit_magnitude */
    int32_t  bucket_count;
    int32_t  counts_len;
    int64_t  total;         /* values recorded */
    int64_t  min;           /* smallest value recorded (INT64_MAX when empty) */
    int64_t  max;           /* largest value recorded, after clamping (0 when empty) */
    int64_t  saturated;     /* values above `highest`, recorded as `highest` */
    double   sum;           /* of recorded values (for the mean) */
    int64_t *counts;        /* owned; counts_len entries */
} d11_hist;

/*
 * Size a histogram for values in [lowest, highest] kept to `digits` significant digits.
 * Returns 0, -EINVAL for a bad range (lowest < 1, highest < 2 * lowest, digits outside
 * 1..5). Allocation failure aborts (sized once at startup).
 */
int  d11_hist_init(d11_hist *h, int64_t lowest, int64_t highest, int digits);
void d11_hist_release(d11_hist *h);
/* Forget every value; keeps the layout and the memory. */
void d11_hist_reset(d11_hist *h);

void d11_hist_record_n(d11_hist *h, int64_t value, int64_t n);
static inline void d11_hist_record(d11_hist *h, int64_t value) { d11_hist_record_n(h, value, 1); }

/* dst += src. Returns 0, or -EINVAL when the layouts differ (nothing is changed then). */
int  d11_hist_merge(d11_hist *dst, const d11_hist *src);

/*
 * The value at percentile p (0 < p <= 100): the highest value equivalent to the slot
 * where the cumulative count first reaches ceil(p/100 * total), capped at the recorded
 * maximum, so the answer is never below the true percentile and at most one slot width
 * above it. 0 when the histogram is empty.
 */
int64_t d11_hist_percentile(const d11_hist *h, double p);
double  d11_hist_mean(const d11_hist *h);

/* Slot arithmetic (exposed for tests and for exporters). */
int32_t d11_hist_index(const d11_hist *h, int64_t value);
int64_t d11_hist_value_at_index(const d11_hist *h, int32_t index);
/* Smallest and largest value that share value's slot. */
int64_t d11_hist_lowest_equivalent(const d11_hist *h, int64_t value);
int64_t d11_hist_highest_equivalent(const d11_hist *h, int64_t value);

#endif
