// Drives the real Segment Node SDK (`@segment/analytics-node` 3.1.0) against a Portrait server.
// Run by crates/cli/tests/clients.rs, which then checks what the server stored.
//
// Environment:
//   PORTRAIT_HOST       base URL of the server, e.g. http://127.0.0.1:7070 (the SDK adds /v1/batch)
//   PORTRAIT_WRITE_KEY  write key of the source to send as
//   PORTRAIT_TAG        tag put into every id (default "node")
//
// The scenario is the one of segment_python.py: user 1 (anonymous track + page, identify,
// alias, track, page, group: 7 events) and user 2 (anonymous track, identify with both ids,
// screen: 3 events). This SDK does not gzip; it posts JSON batches with HTTP Basic auth.
// Exits non-zero if the SDK reported any delivery error or a non-2xx answer.

import { Analytics } from '@segment/analytics-node'

const host = process.env.PORTRAIT_HOST
const writeKey = process.env.PORTRAIT_WRITE_KEY
const tag = process.env.PORTRAIT_TAG || 'node'
if (!host || !writeKey) {
  console.error('PORTRAIT_HOST and PORTRAIT_WRITE_KEY must be set')
  process.exit(2)
}

const errors = []
const statuses = []
const analytics = new Analytics({
  writeKey,
  host,
  flushAt: 4, // several batches for 10 messages
  flushInterval: 200,
  maxRetries: 2,
  httpRequestTimeout: 10000,
})
analytics.on('error', (err) => {
  errors.push(err)
  console.error('segment sdk error:', err?.reason ?? err)
})
analytics.on('http_response', (res) => statuses.push(res.status))

// Every call's callback: err is set when the message could not be delivered.
const pending = []
function call(method, params) {
  pending.push(
    new Promise((resolve) => {
      analytics[method](params, (err) => {
        if (err) {
          errors.push(err)
          console.error(`segment sdk ${method} failed:`, err)
        }
        resolve()
      })
    }),
  )
}

const user1 = `u-${tag}-1`
const anon1 = `a-${tag}-1`
call('track', {
  anonymousId: anon1,
  event: 'Product Viewed',
  properties: {
    sku: 'SKU-1',
    price: 99.5,
    currency: 'CNY',
    tags: ['new', 'sale'],
    variant: { color: 'red', size: 'M' },
  },
})
call('page', { anonymousId: anon1, name: 'Home', properties: { path: '/', title: '首页' } })
call('identify', {
  userId: user1,
  traits: {
    name: '张三',
    email: 'Zhang.San@Example.COM',
    phone: '+86 138-0000-0001',
    plan: 'gold',
    age: 30,
    vip: true,
  },
})
call('alias', { previousId: anon1, userId: user1 })
call('track', {
  userId: user1,
  event: 'Order Completed',
  properties: {
    order_id: 'O-1001',
    revenue: 199.9,
    currency: 'CNY',
    products: [{ sku: 'SKU-1', quantity: 2, price: 99.5 }],
  },
})
call('page', { userId: user1, category: 'Shop', name: 'Checkout', properties: { path: '/checkout' } })
call('group', { userId: user1, groupId: `g-${tag}` })

const user2 = `u-${tag}-2`
const anon2 = `a-${tag}-2`
call('track', { anonymousId: anon2, event: 'Signup Started', properties: { step: 1 } })
call('identify', {
  userId: user2,
  anonymousId: anon2,
  traits: { name: '李四', email: 'li.si@example.com' },
})
call('screen', { userId: user2, name: 'Settings', properties: { tab: 'privacy' } })

await analytics.closeAndFlush({ timeout: 20000 })
await Promise.all(pending)

const bad = statuses.filter((s) => s < 200 || s >= 300)
if (bad.length) {
  errors.push(new Error(`non-2xx answers: ${bad.join(', ')}`))
}
if (statuses.length === 0) {
  errors.push(new Error('the SDK sent no request'))
}
if (errors.length) {
  console.error(`segment_node: ${errors.length} delivery error(s); answers: ${statuses.join(', ')}`)
  process.exit(1)
}
console.log(`segment_node: 10 messages delivered in ${statuses.length} requests`)
