/*
 * cluster_flow.c — the center's cluster flow budgets (see cluster_flow.h): GCRA per
 * resource, grants bounded by the budget, the recent-gateways count, and the FLOW_LEASE
 * frame handler. Single-threaded (the center loop); answers at once, never blocks, no I/O
 * besides queueing the reply on the link.
 */
#include "cluster_flow.h"

#include <errno.h>
#include <string.h>

#include "../core/util.h"

void d11_cflow_center_init(d11_cflow_center *c) { memset(c, 0, sizeof *c); }

static int64_t interval_ns(uint32_t qps) { return qps ? (int64_t)(1000000000ULL / qps) ?: 1 : 0; }

uint64_t d11_cflow_center_available(const d11_cflow_center *c, int res, int64_t now_ns)
{
    D11_ASSERT(res >= 0 && res < D11_CFLOW_RES_MAX);
    const d11_cflow_budget *b = &c->res[res];
    if (!b->qps) return 0;
    int64_t T = interval_ns(b->qps), tau = T * (int64_t)b->burst;
    int64_t debt = b->tat_ns > now_ns ? b->tat_ns - now_ns : 0;
    return debt >= tau ? 0 : (uint64_t)((tau - debt) / T);
}

/* Record gateway id as having leased res at now; returns how many leased res recently. */
static uint16_t gateways_seen(d11_cflow_center *c, uint64_t id, int res, int64_t now_ns)
{
    int slot = -1, oldest = 0;
    int64_t oldest_ns = INT64_MAX;
    for (int i = 0; i < D11_CFLOW_GATEWAYS_MAX; i++) {
        if (c->gw[i].id == id && id) { slot = i; break; }
        int64_t last = 0;
        for (int r = 0; r < D11_CFLOW_RES_MAX; r++)
            if (c->gw[i].seen_ns[r] > last) last = c->gw[i].seen_ns[r];
        if (!c->gw[i].id) last = INT64_MIN;
        if (last < oldest_ns) { oldest_ns = last; oldest = i; }
    }
    if (slot < 0) { /* a new gateway takes the free or the least recently seen slot */
        slot = oldest;
        memset(&c->gw[slot], 0, sizeof c->gw[slot]);
        c->gw[slot].id = id;
    }
    c->gw[slot].seen_ns[res] = now_ns;
    uint16_t n = 0;
    for (int i = 0; i < D11_CFLOW_GATEWAYS_MAX; i++)
        if (c->gw[i].id && c->gw[i].seen_ns[res] &&
            now_ns - c->gw[i].seen_ns[res] <= (int64_t)D11_CFLOW_GATEWAY_TTL_MS * 1000000)
            n++;
    return n;
}

int d11_cflow_center_grant(d11_cflow_center *c, const d11_msg_flow_lease *m, int64_t now_ns,
                           d11_msg_flow_lease_reply *out)
{
    memset(out, 0, sizeof *out);
    if (m->res >= D11_CFLOW_RES_MAX || !m->qps || !m->burst) return -EINVAL;
    d11_cflow_budget *b = &c->res[m->res];
    b->qps = m->qps; /* the rule in force at the asking gateway; the debt (tat) is kept */
    b->burst = m->burst;
    uint64_t avail = d11_cflow_center_available(c, m->res, now_ns);
    uint64_t n = m->want < avail ? m->want : avail;
    if (n) {
        int64_t base = b->tat_ns > now_ns ? b->tat_ns : now_ns;
        b->tat_ns = base + (int64_t)n * interval_ns(b->qps);
    }
    D11_ASSERT(n <= m->want && n <= avail);
    b->leases++;
    b->tokens_granted += n;
    out->granted = (uint32_t)n;
    out->gateways = gateways_seen(c, m->gw_id, m->res, now_ns);
    return 0;
}

bool d11_cflow_center_frame(d11_cflow_center *c, d11_link *k, const d11_frame *f)
{
    if (f->hdr.type != D11_MSG_FLOW_LEASE || (f->hdr.flags & D11_WF_REPLY)) return false;
    d11_msg_flow_lease m;
    d11_msg_flow_lease_reply r;
    if (d11_msg_flow_lease_dec(f->payload, f->payload_len, &m) != 0 ||
        d11_cflow_center_grant(c, &m, d11_mono_ns(), &r) != 0) {
        d11_link_reply(k, &f->hdr, 400, "invalid", "malformed flow lease", 20);
        return true;
    }
    d11_buf b;
    d11_buf_init(&b, 32);
    d11_msg_flow_lease_reply_enc(&b, &r);
    d11_link_reply(k, &f->hdr, 200, NULL, b.data, b.len);
    d11_buf_free(&b);
    return true;
}
