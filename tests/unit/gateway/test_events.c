/*
 * test_events.c — the pure parts of the event stream: the cursor codec of the gateway
 * (gw_cursor_encode / gw_cursor_decode: round trips, implied trailing zeros, rejection of
 * every malformed form) and the cell's event document (d11_cell_event_render: id format
 * for both streams, user_id and trace_id lifted from the payload, null when absent).
 */
#include <stdio.h>
#include <string.h>

#include "cell/events_read.h"
#include "gateway/events.h"
#include "gateway/webhooks.h"
#include "check.h"

static void test_cursor(void)
{
    uint64_t pos[D11_CELLS_MAX] = {0}, back[D11_CELLS_MAX];
    int sh = -1;
    d11_buf b;
    d11_buf_init(&b, 64);
    pos[0] = 5;
    pos[2] = UINT64_MAX;
    gw_cursor_encode(&b, 0, pos, 4);
    CHECKF(b.len == strlen("e1.5.0.18446744073709551615") && !memcmp(b.data, "e1.5.0.18446744073709551615", b.len),
           "%.*s", (int)b.len, b.data);
    CHECK(gw_cursor_decode(b.data, b.len, &sh, back) == 0 && sh == 0);
    CHECK(!memcmp(pos, back, sizeof pos));
    d11_buf_reset(&b);
    memset(pos, 0, sizeof pos);
    gw_cursor_encode(&b, 1, pos, 8);
    CHECK(b.len == 2 && !memcmp(b.data, "s1", 2)); /* all zero: no positions */
    CHECK(gw_cursor_decode(b.data, b.len, &sh, back) == 0 && sh == 1 && back[7] == 0);
    for (int k = 0; k < D11_CELLS_MAX; k++) pos[k] = (uint64_t)k * 1000 + 1;
    d11_buf_reset(&b);
    gw_cursor_encode(&b, 0, pos, D11_CELLS_MAX);
    CHECK(gw_cursor_decode(b.data, b.len, &sh, back) == 0 && !memcmp(pos, back, sizeof pos));
    d11_buf_puts(&b, ".1"); /* one cell too many */
    CHECK(gw_cursor_decode(b.data, b.len, &sh, back) < 0);
    static const char *bad[] = {"", "e", "x1", "e2", "e1.", "e1..3", "e1.a", "e1.1.", "e1.18446744073709551616",
                                "e1 1", "s1.-1", "e1.123456789012345678901"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECKF(gw_cursor_decode(bad[i], strlen(bad[i]), &sh, back) < 0, "accepted %s", bad[i]);
    d11_buf_free(&b);
}

static void test_render(void)
{
    d11_buf b;
    d11_buf_init(&b, 256);
    const char *pl = "{\"type\":\"order.paid\",\"cell\":3,\"order_id\":\"77\",\"user_id\":42,\"status\":\"paid\","
                     "\"total_cents\":5,\"items\":1,\"at\":9,\"trace_id\":\"0123456789abcdef0123456789abcdef\"}";
    d11_outbox_event e = {.event_id = 12, .order_id = 77, .created_at = 9, .type = "order.paid", .type_n = 10,
                          .payload = pl, .payload_n = strlen(pl)};
    d11_cell_event_render(&b, 3, 0, &e);
    d11_buf_puts(&b, "");
    const char *want = "{\"id\":\"3-12\",\"type\":\"order.paid\",\"order_id\":\"77\",\"user_id\":42,\"cell\":3,\"at\":9,"
                       "\"trace_id\":\"0123456789abcdef0123456789abcdef\",\"stress\":false,\"data\":";
    CHECKF(b.len > strlen(want) && !memcmp(b.data, want, strlen(want)), "%.*s", (int)b.len, b.data);
    d11_buf_reset(&b);
    const char *pl2 = "{\"type\":\"order.expired\",\"cell\":0,\"order_id\":\"5\",\"user_id\":7,\"at\":1}";
    d11_outbox_event e2 = {.event_id = 4, .order_id = 5, .type = "order.expired", .type_n = 13, .payload = pl2,
                           .payload_n = strlen(pl2)};
    d11_cell_event_render(&b, 0, 1, &e2);
    const char *want2 = "{\"id\":\"0-s-4\",\"type\":\"order.expired\",\"order_id\":\"5\",\"user_id\":7,\"cell\":0,"
                        "\"at\":0,\"trace_id\":null,\"stress\":true,\"data\":";
    CHECKF(b.len > strlen(want2) && !memcmp(b.data, want2, strlen(want2)), "%.*s", (int)b.len, b.data);
    d11_buf_free(&b);
}

/* The center's position: ".c<pos>" last, at index GW_EV_CENTER; old cursors lack it. */
static void test_cursor_center(void)
{
    uint64_t pos[D11_CELLS_MAX] = {0}, back[D11_CELLS_MAX];
    int sh;
    d11_buf b;
    d11_buf_init(&b, 64);
    pos[1] = 2;
    pos[GW_EV_CENTER] = 9;
    gw_cursor_encode(&b, 0, pos, 2);
    CHECK(b.len == 9 && memcmp(b.data, "e1.0.2.c9", 9) == 0);
    CHECK(gw_cursor_decode(b.data, b.len, &sh, back) == 0 && !memcmp(pos, back, sizeof pos));
    CHECK(gw_cursor_decode("e1.3", 4, &sh, back) == 0 && back[0] == 3 && back[GW_EV_CENTER] == 0);
    CHECK(gw_cursor_decode("e1.c5", 5, &sh, back) == 0 && back[0] == 0 && back[GW_EV_CENTER] == 5);
    static const char *bad[] = {"e1.c", "e1.c5.3", "e1.c5.c6", "e1.cx", "e1.3c5", "e1..c5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECKF(gw_cursor_decode(bad[i], strlen(bad[i]), &sh, back) < 0, "accepted %s", bad[i]);
    d11_buf_free(&b);
}

/* gw_split_events: one span per top-level event object, whatever its strings hold
 * (escaped quotes and backslashes, braces and brackets inside strings, nested objects). */
static void test_split(void)
{
    static const char page[] =
        "{\"events\":[{\"id\":\"0-1\",\"data\":{\"t\":\"a\\\"}]{\"}},"
        "{\"id\":\"1-2\",\"data\":{\"t\":\"b\\\\\",\"n\":[1,{\"x\":2}]}},"
        "{\"id\":\"0-3\",\"data\":{}}],\"next\":\"e1.3.2\"}";
    uint32_t sp[8][2];
    char next[32];
    int k = gw_split_events(page, sizeof page - 1, sp, 8, next, sizeof next);
    CHECKF(k == 3, "%d events", k);
    CHECK(!strcmp(next, "e1.3.2"));
    static const char *want[3] = {"{\"id\":\"0-1\",\"data\":{\"t\":\"a\\\"}]{\"}}",
                                  "{\"id\":\"1-2\",\"data\":{\"t\":\"b\\\\\",\"n\":[1,{\"x\":2}]}}",
                                  "{\"id\":\"0-3\",\"data\":{}}"};
    for (int i = 0; i < 3 && i < k; i++)
        CHECKF(sp[i][1] == strlen(want[i]) && !memcmp(page + sp[i][0], want[i], sp[i][1]), "event %d: %.*s", i,
               (int)sp[i][1], page + sp[i][0]);
    CHECK(gw_split_events(page, sizeof page - 1, sp, 2, next, sizeof next) < 0); /* more than max */
    static const char cut[] = "{\"events\":[{\"id\":\"0-1\",\"data\":\"unterminated";
    CHECK(gw_split_events(cut, sizeof cut - 1, sp, 8, next, sizeof next) < 0);
}

int main(void)
{
    test_split();
    test_cursor();
    test_cursor_center();
    test_render();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail > 0;
}
