/*
 * control.h — the receiving end of the control channel (wire message CONTROL, see
 * rpc/wire_msgs.def): the gateway tells a cell or the center to change its log level or
 * to arm / disarm a fault point for a live chaos experiment (core/fault.h), and asks for
 * the process's state. Used by cell.c and center.c with one dispatch line each.
 *
 * The answer is queued straight on the link, before the process's own fault points and
 * its held output, so an experiment that drops or delays the process's traffic
 * (cell.recv, cell.reply) never blocks the control channel that disarms it.
 * Thread: the process's loop thread (the link's).
 */
#ifndef D11_RPC_CONTROL_H
#define D11_RPC_CONTROL_H

#include <stdbool.h>

#include "link.h"

/* When f is a CONTROL request: apply it, queue the reply on k, return true. Otherwise
 * false (the caller handles f as before). */
bool d11_control_frame(d11_link *k, const d11_frame *f);

#endif
