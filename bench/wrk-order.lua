-- wrk-order.lua — wrk script: every request is POST /v1/orders with a unique
-- Idempotency-Key, a random user and one unit of one SKU, exactly as a shopper's client
-- would place an order against d11 (see /work/shared/brief/API.md). bench/compare.sh uses
-- the same script against d11 and against nginx's static reply, so both pay the same
-- client-side cost.
--
-- Environment:
--   D11_TOKEN  bearer token (omit for servers that do not check it)
--   D11_SKU    SKU to order (default CMP-0)
--   D11_USERS  user ids are drawn uniformly from 1..D11_USERS (default 1000000)
--   D11_RUN    run tag that makes keys unique across runs (default: time + random)
--
-- Keys look like "<run>-<thread>-<n>": unique per request within a run and across runs.

local token = os.getenv("D11_TOKEN") or ""
local sku = os.getenv("D11_SKU") or "CMP-0"
local users = tonumber(os.getenv("D11_USERS") or "1000000")
local run = os.getenv("D11_RUN")
local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_no", next_thread)
end

local prefix
local counter = 0
local headers = {}

function init(args)
  local t = thread_no or 0
  math.randomseed(os.time() * 1000 + t)
  if run == nil or run == "" then
    run = string.format("%x%06x", os.time(), math.random(0, 0xffffff))
  end
  prefix = run .. "-" .. t .. "-"
  headers["Content-Type"] = "application/json"
  if token ~= "" then
    headers["Authorization"] = "Bearer " .. token
  end
end

function request()
  counter = counter + 1
  headers["Idempotency-Key"] = prefix .. counter
  local body = string.format('{"user_id":%d,"items":[{"sku":"%s","quantity":1}]}',
                             math.random(1, users), sku)
  return wrk.format("POST", "/v1/orders", headers, body)
end
