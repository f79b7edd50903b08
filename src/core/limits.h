/*
 * limits.h — every named limit of d11 in one place.
 *
 * A limit that is hit produces a clear error (an HTTP 4xx/5xx with a stable code, or a
 * log line and a metric), never a silent truncation. Compile-time relations between
 * limits are checked by the _Static_asserts at the bottom. Runtime-configurable values
 * (durability, TTLs) live in config.h; these are hard ceilings sized at startup.
 */
#ifndef D11_LIMITS_H
#define D11_LIMITS_H

/* ---- routing ---- */
#define D11_SLOTS                 1024      /* slot = user_id mod D11_SLOTS */
#define D11_CELLS_MAX             64        /* cells in one deployment */

/* ---- HTTP (gateway) ---- */
#define D11_HTTP_HEADER_BYTES_MAX 8192      /* request line + headers -> 431 */
#define D11_HTTP_HEADERS_MAX      64        /* header count -> 431 */
#define D11_HTTP_BODY_BYTES_MAX   16384     /* body -> 413 */
#define D11_HTTP_URL_BYTES_MAX    2048      /* request target -> 414 */
#define D11_HTTP_CONNS_MAX        10000     /* open client connections per gateway thread */
#define D11_HTTP_IDLE_MS          30000     /* keep-alive idle timeout -> close */
#define D11_HTTP_HEADER_TIMEOUT_MS 10000    /* headers must arrive within -> 408 (slowloris) */
#define D11_HTTP_PIPELINE_MAX     64        /* requests in flight per client connection */
#define D11_HTTP_OUT_BYTES_MAX    (1 << 20) /* unsent response bytes per connection */

/* ---- JSON ---- */
#define D11_JSON_TOKENS_MAX       256       /* jsmn tokens per body -> 400 bad_json */
#define D11_JSON_DEPTH_MAX        8         /* nesting depth -> 400 bad_json */

/* ---- products and orders (API.md) ---- */
#define D11_SKU_BYTES_MAX         64
#define D11_TITLE_BYTES_MAX       200
#define D11_CATEGORY_BYTES_MAX    64
#define D11_PRICE_CENTS_MAX       1000000000000LL   /* 10^12 */
#define D11_STOCK_MAX             1000000000000LL   /* 10^12 */
#define D11_ORDER_ITEMS_MAX       16
#define D11_ITEM_QTY_MAX          1000
#define D11_IDEM_KEY_BYTES_MAX    128
#define D11_PAYMENT_ID_BYTES_MAX  128
#define D11_LIST_LIMIT_MAX        200
#define D11_LIST_LIMIT_DEFAULT    50
#define D11_REQUEST_ID_BYTES_MAX  64

/* ---- wire protocol ---- */
#define D11_FRAME_BYTES_MAX       (1 << 20)     /* one frame, header included */
#define D11_RPC_INFLIGHT_MAX      65536         /* pending requests per RPC connection */
#define D11_RPC_OUT_BYTES_MAX     (64 << 20)    /* unsent bytes per RPC connection */
#define D11_RPC_DEADLINE_MS_DEFAULT 3000        /* gateway -> cell budget when none given */

/* ---- cell ---- */
#define D11_BATCH_ORDERS_MAX      4096      /* state changes per storage batch */
#define D11_CELL_PARKED_MAX       65536     /* orders waiting for an allotment */
#define D11_CELL_SKUS_MAX         1000000   /* distinct (sku, shadow) ledgers per cell */
#define D11_CELL_ORDERS_MAX       16000000  /* orders held in one cell's memory -> 503 */
#define D11_CELL_ITEMS_MAX        (2 * D11_CELL_ORDERS_MAX) /* order items in memory -> 503 */

/* ---- tokens ---- */
#define D11_TOKENS_MAX            4096
#define D11_TOKEN_BYTES_MAX       128

/* ---- gateway internals (src/gateway) ---- */
#define D11_HTTP_IN_BYTES_MAX     (D11_HTTP_HEADER_BYTES_MAX + D11_HTTP_BODY_BYTES_MAX + 65536)
                                            /* unparsed input buffered per client connection */
#define D11_HTTP_CHUNK_LINE_BYTES_MAX 256   /* chunk-size line incl. extensions -> 400 */
#define D11_GW_PENDING_MAX        65536     /* upstream requests in flight per gateway thread */
#define D11_GW_AGG_MAX            256       /* /readyz + /admin/cells fan-outs per thread */
#define D11_GW_PROBE_TIMEOUT_MS   1000      /* PING/STATS budget for /readyz, /admin/cells */
#define D11_GW_ROUTING_REFRESH_MS 2000      /* re-fetch the routing table from the center */
#define D11_GW_RECONNECT_MS_MIN   50        /* upstream reconnect backoff, doubling ... */
#define D11_GW_RECONNECT_MS_MAX   2000      /* ... up to this */
#define D11_GW_DRAIN_EXTRA_MS     500       /* graceful stop: request timeout + this, then close */

/* ---- dynamic rules (gateway) ---- */
#define D11_RULES_HISTORY_MAX     16        /* previous versions kept in memory for rollback */
#define D11_RISK_DENY_USERS_MAX   128       /* user ids in the risk deny list */
#define D11_FLOW_QPS_MAX          10000000  /* flow rule qps and burst ceiling */
#define D11_FLOW_CONC_MAX         1000000   /* flow rule concurrency ceiling */
#define D11_FLOW_WARM_S_MAX       3600      /* flow rule warm_up_s ceiling */
#define D11_FLOW_CALLERS_MAX      32        /* per-caller flow rules in one rules document */
#define D11_FLOW_WAIT_MS_MAX      10000     /* flow rule max_wait_ms (pace behaviour) ceiling */
#define D11_DEGRADE_SCHED_MAX     32        /* scoped / scheduled degrade switches per document */
#define D11_HOT_EXCEPT_MAX        16        /* per-value exceptions of one hot-parameter rule */
#define D11_HOT_SLOTS             65536     /* hot-parameter buckets (direct-mapped, per gateway) */
#define D11_RULES_RELOAD_MS       500       /* DATA/rules.json mtime check period */

/* ---- tokens (gateway auth) ---- */
#define D11_AUTH_RELOAD_MS        500       /* DATA/tokens mtime check period */
#define D11_TOKEN_LABEL_BYTES_MAX 64        /* label: [A-Za-z0-9_.-] */
#define D11_TOKENS_FILE_BYTES_MAX (D11_TOKENS_MAX * 256) /* DATA/tokens larger -> refused */

_Static_assert(D11_SLOTS == 1024, "order ids embed a 10-bit slot");
_Static_assert(D11_CELLS_MAX <= D11_SLOTS, "every cell must own at least one slot");
_Static_assert(D11_HTTP_BODY_BYTES_MAX + D11_HTTP_HEADER_BYTES_MAX < D11_FRAME_BYTES_MAX,
               "a request forwarded over the wire must fit one frame");
_Static_assert(D11_ORDER_ITEMS_MAX * (D11_SKU_BYTES_MAX + 16) + D11_IDEM_KEY_BYTES_MAX + 256
                   < D11_FRAME_BYTES_MAX, "an order create must fit one frame");
_Static_assert(D11_LIST_LIMIT_MAX * 4096 < D11_FRAME_BYTES_MAX,
               "a full order list page must fit one reply frame");
_Static_assert(D11_JSON_DEPTH_MAX >= 3, "order bodies nest 3 deep");

_Static_assert(D11_HTTP_URL_BYTES_MAX < D11_HTTP_HEADER_BYTES_MAX,
               "the request line counts against the header bytes");
_Static_assert(D11_HTTP_PIPELINE_MAX <= 255, "pipeline slot index fits a byte");
_Static_assert(D11_GW_PENDING_MAX <= 65536, "pending index is the low 16 bits of a req_id");
_Static_assert(D11_RISK_DENY_USERS_MAX + 64 <= D11_JSON_TOKENS_MAX,
               "a full rules document must parse within the JSON token limit");
_Static_assert(D11_GW_PROBE_TIMEOUT_MS < D11_RPC_DEADLINE_MS_DEFAULT, "probes are short");

/* ---- wire message lists (src/rpc/wire_msgs.def; appended by the wire helper) ---- */
#define D11_WIRE_LIST_MAX         8192      /* entries in one HELLO reply / REPORT -> D11_ETOOBIG */
#define D11_WIRE_LIST_ENTRY_BYTES_MAX (2 + D11_SKU_BYTES_MAX + 1 + 3 * 8) /* largest entry */
_Static_assert(D11_WIRE_LIST_MAX * D11_WIRE_LIST_ENTRY_BYTES_MAX + 64 < D11_FRAME_BYTES_MAX,
               "a full HELLO reply or REPORT must fit one frame");

/* catalog listing (GET /v1/products, issue 12) */
#define D11_PRODUCT_QUERY_BYTES_MAX 100     /* q: title search text */
#define D11_GW_CATALOG_CACHE_N      16      /* cached listing pages per gateway thread */
#define D11_GW_CATALOG_CACHE_MS     1000    /* how long a cached page is served */
/* ---- event stream (docs/events.md; appended by the events helper) ---- */
#define D11_EVENTS_LIMIT_MAX      1000      /* events per GET /v1/events page and per cell read */
#define D11_EVENTS_LIMIT_DEFAULT  100
#define D11_EVENTS_WAIT_MS_MAX    30000     /* long-poll ceiling (wait_ms) */
#define D11_EVENTS_POLL_MS        20        /* long-poll: re-read the cells this often */
#define D11_EVENTS_WAITERS_MAX    256       /* long-polls waiting per gateway thread -> 503 */
#define D11_EVENT_JSON_BYTES_MAX  900       /* one rendered event (payload is bounded) */
#define D11_CONSUMER_NAME_BYTES_MAX 64      /* /v1/consumers/{name}: [A-Za-z0-9_.-] */
#define D11_CONSUMERS_MAX         256       /* named consumers per deployment -> 507 */
#define D11_EVENTS_PRUNE_ROWS     512       /* outbox rows deleted per stream per round */
#define D11_EVENTS_PRUNE_MS       500       /* retention round period (gateway thread 0) */
_Static_assert(D11_EVENTS_LIMIT_MAX * (D11_EVENT_JSON_BYTES_MAX + 48) + 64 < D11_FRAME_BYTES_MAX,
               "a full events page must fit one reply frame");

/* ---- live chaos (docs/reliability.md "Live chaos"; appended by the chaos helper) ---- */
#define D11_CHAOS_EXPERIMENTS_MAX 64        /* experiments a gateway remembers (armed + history) */
#define D11_CHAOS_ARMED_MAX       16        /* armed at once -> 409 too_many_experiments */
#define D11_CHAOS_TIMEOUT_S_MAX   3600      /* an experiment's longest life */
#define D11_CHAOS_DELAY_MS_MAX    10000     /* params.ms of a delay */
_Static_assert(D11_CHAOS_ARMED_MAX <= D11_CHAOS_EXPERIMENTS_MAX, "armed experiments are remembered");

#endif
