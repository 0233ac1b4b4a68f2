// Drives the real RudderStack Node SDK (`@rudderstack/rudder-sdk-node` 3.0.13) against a
// Portrait server. Run by crates/cli/tests/clients.rs, which then checks what the server stored.
//
// Environment:
//   PORTRAIT_HOST       base URL of the server, given as the SDK's dataPlaneUrl (it adds /v1/batch)
//   PORTRAIT_WRITE_KEY  write key of the source to send as
//   PORTRAIT_TAG        tag put into every id (default "rudder-node")
//
// The scenario is the one of segment_python.py (user 1: 7 events, user 2: 3 events). This SDK
// gzips every batch and, through axios, labels the gzipped bytes
// `Content-Type: application/x-www-form-urlencoded` with `Content-Encoding: gzip`; it adds
// `channel`, `_metadata`, `originalTimestamp` and copies identify traits into context.traits.
// Exits non-zero if the SDK reported any delivery error.

import Analytics from '@rudderstack/rudder-sdk-node'

const host = process.env.PORTRAIT_HOST
const writeKey = process.env.PORTRAIT_WRITE_KEY
const tag = process.env.PORTRAIT_TAG || 'rudder-node'
if (!host || !writeKey) {
  console.error('PORTRAIT_HOST and PORTRAIT_WRITE_KEY must be set')
  process.exit(2)
}

const errors = []
const client = new Analytics(writeKey, {
  dataPlaneUrl: host,
  flushAt: 4, // several batches for 10 messages
  flushInterval: 200,
  retryCount: 1,
  logLevel: 'error',
  gzip: true,
  errorHandler: (err) => {
    errors.push(err)
    console.error('rudder sdk error:', err?.response?.status, err?.response?.data ?? err?.message)
  },
})

// Every call's callback: err is set when the batch holding the message failed.
const pending = []
function call(method, params) {
  pending.push(
    new Promise((resolve) => {
      client[method](params, (err) => {
        if (err) {
          errors.push(err)
          console.error(`rudder sdk ${method} failed:`, err?.message ?? err)
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

// flush() sends at most flushAt messages per call and waits for the request in flight.
for (let i = 0; i < 10; i++) {
  try {
    await client.flush()
  } catch (err) {
    errors.push(err)
    console.error('rudder sdk flush failed:', err?.message ?? err)
    break
  }
  if (client.queue.length === 0) break
}
await Promise.all(pending)
if (client.queue.length !== 0) {
  errors.push(new Error(`${client.queue.length} messages left unsent`))
}

if (errors.length) {
  console.error(`rudder_node: ${errors.length} delivery error(s)`)
  process.exit(1)
}
console.log('rudder_node: 10 messages delivered')
