/*
 * control.c — CONTROL requests (see control.h): decode, apply to this process's log level
 * or fault table, answer {"pid":N,"level":"info","faults":[...]}.
 *
 * Invalid requests (bad payload, unknown point, an arm fault.h refuses) answer 400
 * invalid and change nothing. A disarm of an arm that is not there (expired, replaced,
 * never made — e.g. the process restarted since) is not an error: the state says so.
 * Every change is logged at warn, so it shows at any level; every request at debug.
 */
#include "control.h"

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "../core/fault.h"
#include "../core/util.h"

static void answer(d11_link *k, const d11_frame_hdr *h, int status, const char *msg)
{
    d11_buf b;
    d11_buf_init(&b, 512);
    if (msg) {
        d11_buf_puts(&b, msg);
    } else {
        d11_buf_printf(&b, "{\"pid\":%d,\"level\":\"%s\",\"faults\":", (int)getpid(),
                       d11_log_level_name(d11_log_level()));
        d11_fault_render(&b);
        d11_buf_puts(&b, "}");
    }
    d11_link_reply(k, h, (uint32_t)status, msg ? "invalid" : NULL, b.data, b.len);
    d11_buf_free(&b);
}

bool d11_control_frame(d11_link *k, const d11_frame *f)
{
    if (f->hdr.type != D11_MSG_CONTROL || (f->hdr.flags & D11_WF_REPLY)) return false;
    d11_msg_control m;
    if (d11_msg_control_dec(f->payload, f->payload_len, &m) != 0) {
        answer(k, &f->hdr, 400, "malformed control request");
        return true;
    }
    d11_log(D11_LOG_DEBUG, "control request: op %u point %u action %u", m.op, m.point, m.action);
    if (m.op == 1) {
        if (!d11_log_level_name(m.level)) {
            answer(k, &f->hdr, 400, "unknown log level");
            return true;
        }
        int old = d11_log_level();
        d11_log_set_level(m.level);
        char kv[120];
        snprintf(kv, sizeof kv, "\"event\":\"log_level\",\"old\":\"%s\",\"new\":\"%s\",\"via\":\"control\"",
                 d11_log_level_name(old), d11_log_level_name(m.level));
        d11_log_kv(D11_LOG_WARN, kv, "log level %s -> %s (control channel)", d11_log_level_name(old),
                   d11_log_level_name(m.level));
    } else if (m.op == 2) {
        if (d11_fault_arm(m.point, m.action, m.delay_ms, m.percent, m.timeout_ms, m.id) < 0) {
            answer(k, &f->hdr, 400, "fault arm refused: bad point, action, percent, delay or timeout");
            return true;
        }
    } else if (m.op == 3) {
        if (m.point >= D11_FP_COUNT || m.id == 0) {
            answer(k, &f->hdr, 400, "disarm needs a known point and an experiment id");
            return true;
        }
        (void)d11_fault_disarm(m.point, m.id); /* -ENOENT: already gone, which is what was asked */
    }
    answer(k, &f->hdr, 200, NULL);
    return true;
}
