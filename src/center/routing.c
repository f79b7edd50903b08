/*
 * routing.c — the center's routing table (see routing.h).
 */
#include "routing.h"

void center_routing_first(d11_routing *r, uint16_t ncells)
{
    d11_routing_default(r, ncells);
    D11_ASSERT(r->ncells == ncells && r->version == 1);
    D11_ASSERT(center_routing_check(r, ncells) == 0);
}

int center_routing_check(const d11_routing *r, uint16_t ncells)
{
    if (r->ncells != ncells) {
        d11_error("center: the data directory was created with %u cells, not %u; start with --cells %u "
                  "(moving slots between cells is not supported yet)",
                  r->ncells, ncells, r->ncells);
        return D11_ECONFIG;
    }
    for (int s = 0; s < D11_SLOTS; s++)
        if (r->cell_of_slot[s] >= ncells) {
            d11_error("center: routing slot %d names cell %u of %u", s, r->cell_of_slot[s], ncells);
            return D11_ECONFIG;
        }
    return 0;
}

void center_routing_reply(d11_buf *out, const d11_frame_hdr *req, const d11_routing *r)
{
    d11_frame_hdr h = *req;
    h.flags = D11_WF_REPLY;
    h.status = 200;
    h.deadline_ms = 0;
    size_t start = d11_frame_begin(out, &h);
    d11_routing_enc(out, r);
    d11_frame_end(out, start);
}
