/*
 * hist.c — the log-linear histogram (see hist.h for the layout).
 *
 * Invariants: total == sum of counts[]; every index computed for a value in
 * [0, highest] is inside [0, counts_len). Both are asserted where they can break.
 */

#include "hist.h"
#include "../core/util.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int d11_hist_init(d11_hist *h, int64_t lowest, int64_t highest, int digits)
{
    memset(h, 0, sizeof *h);
    if (lowest < 1 || digits < 1 || digits > 5 || highest < 2 * lowest) return -EINVAL;

    /* The largest value that must still be resolved to a single unit is 2 * 10^digits:
     * the sub-bucket count is the power of two at or above it. */
    int64_t single_unit_max = 2;
    for (int i = 0; i < digits; i++) single_unit_max *= 10;
    int count_magnitude = 0;
    while ((INT64_C(1) << count_magnitude) < single_unit_max) count_magnitude++;
    h->sub_bucket_half_magnitude = (count_magnitude > 1 ? count_magnitude : 1) - 1;
    h->sub_bucket_count = (int32_t)1 << (h->sub_bucket_half_magnitude + 1);
    h->sub_bucket_half_count = h->sub_bucket_count / 2;
    h->unit_magnitude = 63 - __builtin_clzll((unsigned long long)lowest);
    if (h->unit_magnitude + h->sub_bucket_half_magnitude + 1 > 61) return -EINVAL;
    h->sub_bucket_mask = ((int64_t)h->sub_bucket_count - 1) << h->unit_magnitude;

    /* Buckets until the first value that cannot be tracked lies above `highest`. */
    int64_t untrackable = (int64_t)h->sub_bucket_count << h->unit_magnitude;
    int32_t buckets = 1;
    while (untrackable <= highest) {
        if (untrackable > INT64_MAX / 2) { buckets++; break; }
        untrackable <<= 1;
        buckets++;
    }
    h->bucket_count = buckets;
    h->counts_len = (buckets + 1) * h->sub_bucket_half_count;
    h->lowest = lowest;
    h->highest = highest;
    h->digits = digits;
    h->counts = calloc((size_t)h->counts_len, sizeof *h->counts);
    if (!h->counts) d11_fatal("out of memory for a histogram of %d slots", h->counts_len);
    h->min = INT64_MAX;
    D11_ASSERT(d11_hist_index(h, highest) < h->counts_len);
    return 0;
}

void d11_hist_release(d11_hist *h)
{
    free(h->counts);
    h->counts = NULL;
    h->counts_len = 0;
}

void d11_hist_reset(d11_hist *h)
{
    if (h->counts) memset(h->counts, 0, (size_t)h->counts_len * sizeof *h->counts);
    h->total = 0;
    h->min = INT64_MAX;
    h->max = 0;
    h->saturated = 0;
    h->sum = 0;
}

static inline int32_t bucket_of(const d11_hist *h, int64_t v)
{
    int pow2ceiling = 64 - __builtin_clzll((unsigned long long)(v | h->sub_bucket_mask));
    return pow2ceiling - h->unit_magnitude - (h->sub_bucket_half_magnitude + 1);
}

int32_t d11_hist_index(const d11_hist *h, int64_t v)
{
    if (v < 0) v = 0;
    int32_t b = bucket_of(h, v);
    int32_t sub = (int32_t)(v >> (b + h->unit_magnitude));
    return ((b + 1) << h->sub_bucket_half_magnitude) + (sub - h->sub_bucket_half_count);
}

int64_t d11_hist_value_at_index(const d11_hist *h, int32_t index)
{
    int32_t b = (index >> h->sub_bucket_half_magnitude) - 1;
    int32_t sub = (index & (h->sub_bucket_half_count - 1)) + h->sub_bucket_half_count;
    if (b < 0) {
        sub -= h->sub_bucket_half_count;
        b = 0;
    }
    return (int64_t)sub << (b + h->unit_magnitude);
}

static inline int64_t slot_width(const d11_hist *h, int64_t v)
{
    int32_t b = bucket_of(h, v < 0 ? 0 : v);
    return INT64_C(1) << (b + h->unit_magnitude);
}

int64_t d11_hist_lowest_equivalent(const d11_hist *h, int64_t v)
{
    if (v < 0) v = 0;
    return v & ~(slot_width(h, v) - 1);
}

int64_t d11_hist_highest_equivalent(const d11_hist *h, int64_t v)
{
    if (v < 0) v = 0;
    return d11_hist_lowest_equivalent(h, v) + slot_width(h, v) - 1;
}

void d11_hist_record_n(d11_hist *h, int64_t v, int64_t n)
{
    if (n <= 0) return;
    if (v < 0) v = 0;
    if (v > h->highest) {
        v = h->highest;
        h->saturated += n;
    }
    int32_t i = d11_hist_index(h, v);
    D11_ASSERT(i >= 0 && i < h->counts_len);
    h->counts[i] += n;
    h->total += n;
    h->sum += (double)v * (double)n;
    if (v < h->min) h->min = v;
    if (v > h->max) h->max = v;
}

int d11_hist_merge(d11_hist *dst, const d11_hist *src)
{
    if (dst->lowest != src->lowest || dst->highest != src->highest ||
        dst->digits != src->digits || dst->counts_len != src->counts_len)
        return -EINVAL;
    if (src->total == 0) return 0;
    for (int32_t i = 0; i < src->counts_len; i++) dst->counts[i] += src->counts[i];
    dst->total += src->total;
    dst->saturated += src->saturated;
    dst->sum += src->sum;
    if (src->min < dst->min) dst->min = src->min;
    if (src->max > dst->max) dst->max = src->max;
    return 0;
}

int64_t d11_hist_percentile(const d11_hist *h, double p)
{
    if (h->total == 0) return 0;
    if (p > 100) p = 100;
    if (p <= 0) return h->min;
    int64_t want = (int64_t)ceil(p / 100.0 * (double)h->total);
    if (want < 1) want = 1;
    if (want > h->total) want = h->total;
    int64_t seen = 0;
    for (int32_t i = 0; i < h->counts_len; i++) {
        seen += h->counts[i];
        if (seen >= want) {
            int64_t v = d11_hist_highest_equivalent(h, d11_hist_value_at_index(h, i));
            if (v > h->max) v = h->max;
            if (v < h->min) v = h->min;
            return v;
        }
    }
    D11_ASSERT(!"histogram total exceeds the sum of its counts");
    return h->max;
}

double d11_hist_mean(const d11_hist *h)
{
    return h->total ? h->sum / (double)h->total : 0.0;
}
