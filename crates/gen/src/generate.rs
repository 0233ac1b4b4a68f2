//! Per-person event generation into per-file byte buffers.
//!
//! A [`Block`] holds the output of a run of consecutive people: one buffer per output file
//! (source × month), plus truth rows. Blocks are generated independently (in parallel) and
//! written in order, so the files are byte-identical whatever the thread count.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::catalog::*;
use crate::person::*;
use crate::sources::*;
use crate::text::*;

/// Purchase channels.
const CH_TMALL: u8 = 0;
const CH_JD: u8 = 1;
const CH_POS: u8 = 2;
const CH_APP: u8 = 3;
const CH_WEB: u8 = 4;
const CHANNEL_NAMES: [&str; 5] = ["tmall", "jd", "pos", "app", "web"];

/// Shared, read-only generation context.
pub(crate) struct Ctx {
    pub keys: Keys,
    pub win: Window,
    /// Month index of each day of the window.
    month_of: Vec<u16>,
    /// First day of each month of the window.
    pub month_starts: Vec<i64>,
    /// First slot of each source.
    base: [usize; NSOURCES],
    /// Number of output slots (files).
    pub nslots: usize,
    /// Purchase-day weight of each day of the window (promotions).
    weight: Vec<f64>,
    max_weight: f64,
    /// Promotion peak days.
    peaks: Vec<i64>,
    pub campaigns: Vec<Campaign>,
    pub record_truth: bool,
}

impl Ctx {
    pub(crate) fn new(win: Window, seed: u64, record_truth: bool) -> Self {
        let keys = Keys::new(seed);
        let (start, end) = (win.start, win.end);
        let mut month_of = Vec::with_capacity((end - start + 1) as usize);
        let mut month_starts = Vec::new();
        let mut current = (0i64, 0u32);
        for day in start..=end {
            let (y, m, _) = civil_from_days(day);
            if (y, m) != current {
                current = (y, m);
                month_starts.push(day);
            }
            month_of.push((month_starts.len() - 1) as u16);
        }
        let mut base = [0; NSOURCES];
        let mut nslots = 0;
        for (s, def) in SOURCES.iter().enumerate() {
            base[s] = nslots;
            nslots += if def.monthly { month_starts.len() } else { 1 };
        }
        let mut weight = vec![1.0; month_of.len()];
        let mut peaks = Vec::new();
        let (y0, _, _) = civil_from_days(start);
        let (y1, _, _) = civil_from_days(end);
        for y in y0..=y1 {
            let d = |m, d| days_from_civil(y, m, d);
            let mut set = |from: i64, to: i64, w: f64| {
                for day in from.max(start)..=to.min(end) {
                    weight[(day - start) as usize] = w;
                }
            };
            set(d(3, 8), d(3, 8), 3.0);
            set(d(5, 20), d(5, 20), 2.0);
            set(d(6, 1), d(6, 17), 1.8);
            set(d(6, 18), d(6, 18), 7.0);
            set(d(10, 20), d(10, 31), 1.6);
            set(d(11, 1), d(11, 10), 2.2);
            set(d(11, 11), d(11, 11), 10.0);
            set(d(11, 12), d(11, 20), 0.7);
            set(d(12, 12), d(12, 12), 3.0);
            for (m, dd) in [(3, 8), (5, 20), (6, 18), (11, 11), (12, 12)] {
                peaks.push(d(m, dd));
            }
        }
        peaks.retain(|p| (start..=end).contains(p));
        let max_weight = weight.iter().cloned().fold(1.0, f64::max);
        let campaigns = campaigns(start, end);
        Self {
            keys,
            win,
            month_of,
            month_starts,
            base,
            nslots,
            weight,
            max_weight,
            peaks,
            campaigns,
            record_truth,
        }
    }

    /// Output slot of a source for an event on `day` (clamped into the window).
    fn slot(&self, source: usize, day: i64) -> usize {
        if SOURCES[source].monthly {
            let i = (day - self.win.start).clamp(0, self.month_of.len() as i64 - 1) as usize;
            self.base[source] + self.month_of[i] as usize
        } else {
            self.base[source]
        }
    }

    /// The (source, month index) of a slot.
    pub(crate) fn slot_info(&self, slot: usize) -> (usize, Option<usize>) {
        let s = (0..NSOURCES)
            .rev()
            .find(|&s| self.base[s] <= slot)
            .unwrap_or(0);
        (s, SOURCES[s].monthly.then(|| slot - self.base[s]))
    }

    fn day_weight(&self, day: i64) -> f64 {
        self.weight
            .get((day - self.win.start) as usize)
            .copied()
            .unwrap_or(1.0)
    }
}

fn campaigns(start: i64, end: i64) -> Vec<Campaign> {
    use Audience::*;
    const SMS: u8 = 1;
    const WX: u8 = 2;
    const PUSH: u8 = 4;
    let mut out = Vec::new();
    let (y0, m0, _) = civil_from_days(start);
    let (y1, m1, _) = civil_from_days(end);
    let mut ym = y0 * 12 + m0 as i64 - 1;
    while ym < y1 * 12 + m1 as i64 {
        let (y, m) = (ym / 12, (ym % 12) as u32 + 1);
        let mut plan: Vec<(u32, &'static str, u8, Audience, bool)> = vec![
            (1, "新人礼包", SMS | PUSH, New, true),
            (5, "会员日专享券", SMS | PUSH, All, true),
            (15, "新品上市", WX | PUSH, All, false),
        ];
        if m % 3 == 0 {
            plan.push((22, "沉睡会员唤醒", SMS, Dormant, true));
        }
        if m % 2 == 0 {
            plan.push((25, "VIP专属礼遇", SMS | WX, Vip, false));
        }
        if m % 3 == 1 {
            plan.push((8, "敏感肌护理课堂", WX | PUSH, Sensitive, false));
        }
        match m {
            3 => plan.push((5, "女王节焕新", SMS | WX, All, true)),
            5 => plan.push((18, "520礼遇", PUSH, All, true)),
            6 => plan.push((10, "618大促预热", SMS | WX | PUSH, All, true)),
            10 => plan.push((20, "双11预售开启", SMS | WX | PUSH, All, true)),
            11 => plan.push((10, "双11狂欢夜", WX | PUSH, All, true)),
            12 => plan.push((10, "双12年终回馈", PUSH, All, true)),
            _ => {}
        }
        plan.sort_by_key(|p| p.0);
        let mut seq_in_day = (0u32, 0u32);
        for (d, name, channels, audience, promo) in plan {
            let day = days_from_civil(y, m, d);
            if !(start..=end).contains(&day) {
                continue;
            }
            seq_in_day = if seq_in_day.0 == d {
                (d, seq_in_day.1 + 1)
            } else {
                (d, 1)
            };
            let id = format!("CMP{y:04}{m:02}{d:02}{:02}", seq_in_day.1);
            out.push(Campaign {
                id,
                name,
                day,
                channels,
                audience,
                promo,
            });
        }
        ym += 1;
    }
    out
}

/// The output of a run of people.
pub(crate) struct Block {
    /// One buffer per output slot.
    pub bufs: Vec<Vec<u8>>,
    /// Records per source.
    pub records: [u64; NSOURCES],
    /// Rows of truth/identifiers.csv.
    pub ids: Vec<u8>,
    /// Rows of truth/people.csv.
    pub people: Vec<u8>,
    /// Rows of truth/records.csv.
    pub recs: Vec<u8>,
    /// People generated.
    pub count: u64,
}

impl Block {
    pub(crate) fn new(nslots: usize) -> Self {
        Self {
            bufs: vec![Vec::new(); nslots],
            records: [0; NSOURCES],
            ids: Vec::new(),
            people: Vec::new(),
            recs: Vec::new(),
            count: 0,
        }
    }

    pub(crate) fn clear(&mut self) {
        for b in &mut self.bufs {
            b.clear();
        }
        self.records = [0; NSOURCES];
        self.ids.clear();
        self.people.clear();
        self.recs.clear();
        self.count = 0;
    }
}

/// Generates people `from..to` into `out`.
pub(crate) fn generate_block(ctx: &Ctx, from: u64, to: u64, out: &mut Block) {
    let mut scratch = Scratch::default();
    for idx in from..to {
        let mut rng = ChaCha8Rng::from_seed(ctx.keys.chacha);
        rng.set_stream(idx);
        let person = Person::new(&ctx.keys, &ctx.win, idx, &mut rng);
        let mut g = Gen {
            ctx,
            out: &mut *out,
            rng,
            p: person,
            used: [0; NSLOTS],
            groups: Vec::new(),
            seq: 0,
            stats: Stats::default(),
            s: &mut scratch,
            follow: [None; 3],
            identified: [false; 5],
        };
        g.run();
        out.count += 1;
    }
}

#[derive(Default)]
struct Scratch {
    id: Vec<u8>,
    /// Id of the last order written (tickets refer to it).
    order: Vec<u8>,
    purchases: Vec<Purchase>,
    tmp: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
struct Purchase {
    t: i64,
    channel: u8,
    sku: usize,
    qty: u32,
    /// Second and third basket lines (POS), as SKU indexes.
    extra: [Option<usize>; 2],
    discount: i64,
    refund: bool,
}

#[derive(Default)]
struct Stats {
    orders: u32,
    revenue: i64,
    list_total: i64,
    discount_total: i64,
    last_order: Option<i64>,
    first_active: Option<i64>,
    last_active: Option<i64>,
    cats: [u32; 7],
    channels: u8,
    reactivated: bool,
}

/// Follow state of one WeChat app: (follow time, unfollow time).
type Follow = Option<(i64, Option<i64>)>;

struct Gen<'a> {
    ctx: &'a Ctx,
    out: &'a mut Block,
    rng: ChaCha8Rng,
    p: Person,
    /// Raw formats written per identifier slot.
    used: [u16; NSLOTS],
    /// Linked groups of slots (bit sets), from co-occurrence in one record.
    groups: Vec<u32>,
    seq: u64,
    stats: Stats,
    s: &'a mut Scratch,
    follow: [Follow; 3],
    /// Whether an anonymous id (slot offset) has been identified (logged in).
    identified: [bool; 5],
}

enum Hours {
    Online,
    Store,
    Office,
}

const ONLINE_HOURS: [f64; 24] = [
    4.0, 2.0, 1.0, 0.5, 0.3, 0.3, 0.6, 1.2, 2.0, 2.5, 3.0, 3.2, 3.5, 3.0, 2.8, 2.8, 2.8, 3.0, 3.0,
    3.8, 5.0, 6.0, 5.5, 4.0,
];
const STORE_HOURS: [f64; 12] = [2.0, 3.0, 3.0, 3.0, 3.5, 4.0, 4.0, 4.0, 4.5, 5.0, 4.0, 2.0];

impl Gen<'_> {
    fn noise(&self) -> f64 {
        self.ctx.win.noise
    }

    fn chance(&mut self, p: f64) -> bool {
        chance(&mut self.rng, p)
    }

    fn below(&mut self, n: usize) -> usize {
        below(&mut self.rng, n)
    }

    fn in_window(&self, day: i64) -> bool {
        (self.ctx.win.start..=self.ctx.win.end).contains(&day)
    }

    /// A local time on `day`.
    fn at(&mut self, day: i64, hours: Hours) -> i64 {
        let peak = self.ctx.peaks.contains(&day);
        let hour = match hours {
            Hours::Online if peak && self.chance(0.3) => 0,
            Hours::Online => weighted(&mut self.rng, &ONLINE_HOURS),
            Hours::Store => 10 + weighted(&mut self.rng, &STORE_HOURS),
            Hours::Office => 9 + self.below(12),
        } as i64;
        day * DAY + hour * 3600 + self.below(3600) as i64
    }

    fn touch(&mut self, day: i64) {
        let s = &mut self.stats;
        s.first_active = Some(s.first_active.map_or(day, |f| f.min(day)));
        s.last_active = Some(s.last_active.map_or(day, |l| l.max(day)));
    }

    /// Notes that a raw identifier value was written.
    fn note(&mut self, slot: usize, fmt: u16) {
        self.used[slot] |= 1 << fmt;
    }

    /// Links the slots that one record carried (usable values only).
    fn link(&mut self, mut mask: u32) {
        if self.p.phone_shared {
            mask &= !(1 << S_PHONE);
        }
        if mask.count_ones() < 2 {
            return;
        }
        let mut merged = mask;
        self.groups.retain(|g| {
            if g & merged != 0 {
                merged |= g;
                false
            } else {
                true
            }
        });
        self.groups.push(merged);
    }

    /// Whether two slots are already linked through earlier records.
    fn linked(&self, a: usize, b: usize) -> bool {
        let both = (1u32 << a) | (1 << b);
        self.groups.iter().any(|g| g & both == both)
    }

    /// A fresh per-person sequence number for record ids.
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        (self.p.idx << 20) | (self.seq & 0xf_ffff)
    }

    /// Appends the record's truth row and counts it.
    fn record(&mut self, source: usize) {
        self.out.records[source] += 1;
        if self.ctx.record_truth {
            let r = &mut self.out.recs;
            r.extend_from_slice(SOURCES[source].name.as_bytes());
            r.push(b',');
            push_csv(r, std::str::from_utf8(&self.s.id).unwrap_or(""));
            r.push(b',');
            push_u64(r, self.p.idx);
            r.push(b'\n');
        }
    }

    /// A phone format: plain, or a variant with probability `p_variant` (scaled by noise).
    fn phone_fmt(&mut self, p_variant: f64) -> u16 {
        if self.chance(p_variant * self.noise()) {
            1 + self.below(PF_VARIANTS as usize - 1) as u16
        } else {
            PF_PLAIN
        }
    }

    fn run(&mut self) {
        self.plan_follows();
        self.plan_purchases();
        self.campaigns();
        self.s.purchases.sort_by_key(|p| p.t);
        let purchases = std::mem::take(&mut self.s.purchases);
        for pu in &purchases {
            self.purchase(pu);
        }
        self.browsing();
        self.wechat();
        self.crm();
        self.truth();
        self.s.purchases = purchases;
        self.s.purchases.clear();
    }

    // ----- planning ------------------------------------------------------------------------

    fn plan_follows(&mut self) {
        for (a, app) in WX_APPS.iter().enumerate() {
            if self.p.openid[a].is_none() {
                continue;
            }
            let w = &self.ctx.win;
            let before = self.p.first_day <= w.start + 30 && self.chance(0.6);
            let follow = if before {
                w.start - 1 - self.below(900) as i64
            } else {
                let span = (self.p.last_day - self.p.first_day).max(0) as usize + 1;
                self.p.first_day + self.below(span.min(60)) as i64
            };
            let t = follow * DAY + 8 * 3600 + self.below(15 * 3600) as i64;
            let unfollow_p = match self.p.persona {
                Persona::Churning => 0.5,
                Persona::Dormant => 0.3,
                _ => 0.04,
            };
            let unfollow = (!app.mini_program && self.chance(unfollow_p)).then(|| {
                let from = (self.p.last_day.max(follow + 1)).min(w.end);
                let day = (from + self.below(30) as i64).min(w.end);
                day * DAY + 9 * 3600 + self.below(14 * 3600) as i64
            });
            self.follow[a] = Some((t, unfollow));
        }
    }

    fn pick_sku(&mut self) -> usize {
        if self.chance(0.45) {
            return self.p.staple;
        }
        let cat = weighted(&mut self.rng, &self.p.cat_weights);
        let (start, len) = category_skus(cat);
        if self.p.price_taste > 0.5 && self.chance(0.5) {
            // The priciest of the category.
            return (start..start + len)
                .max_by_key(|&i| SKUS[i].price)
                .unwrap_or(start);
        }
        if self.p.price_taste < 0.0 && self.chance(0.5) {
            // The cheapest of the category.
            return (start..start + len)
                .min_by_key(|&i| SKUS[i].price)
                .unwrap_or(start);
        }
        start + self.below(len)
    }

    fn pick_channel(&mut self, day: i64) -> u8 {
        let peak = self.ctx.day_weight(day) > 1.5;
        let weekend = weekday(day) >= 5;
        let p = &self.p;
        let member = p.member_id.is_some();
        let w = [
            if p.tmall { 3.0 } else { 0.0 },
            if p.jd { 2.0 } else { 0.0 },
            if p.pos {
                if peak {
                    0.8
                } else if weekend {
                    3.5
                } else {
                    2.0
                }
            } else {
                0.0
            },
            if p.app && member { 0.8 } else { 0.0 },
            if p.web && member { 0.4 } else { 0.0 },
        ];
        if w.iter().sum::<f64>() <= 0.0 {
            return CH_TMALL;
        }
        weighted(&mut self.rng, &w) as u8
    }

    fn add_purchase(&mut self, day: i64, promo: bool, channel: Option<u8>) {
        let channel = channel.unwrap_or_else(|| self.pick_channel(day));
        let hours = if channel == CH_POS {
            Hours::Store
        } else {
            Hours::Online
        };
        let t = self.at(day, hours);
        let sku = self.pick_sku();
        let stock_up = promo && self.p.discount_hunter;
        let qty = if stock_up {
            2 + self.below(3) as u32
        } else {
            match self.rng.random::<f64>() {
                x if x < 0.8 => 1,
                x if x < 0.95 => 2,
                _ => 3,
            }
        };
        let mut extra = [None; 2];
        if channel == CH_POS || channel == CH_APP || channel == CH_WEB {
            for e in &mut extra {
                if self.chance(0.3) {
                    *e = Some(self.pick_sku());
                }
            }
        }
        let list: i64 = SKUS[sku].price * qty as i64
            + extra.iter().flatten().map(|&s| SKUS[s].price).sum::<i64>();
        let pct = if promo {
            10 + self.below(16) as i64
                + if self.p.discount_hunter {
                    5 + self.below(6) as i64
                } else {
                    0
                }
        } else if self.p.discount_hunter {
            self.below(10) as i64
        } else if self.chance(0.2) {
            5
        } else {
            0
        };
        let discount = list * pct / 100 / 100 * 100;
        let sensitive_mismatch =
            self.p.persona == Persona::SensitiveSkin && SKUS[sku].category != CAT_SENSITIVE;
        let refund = self.chance(if sensitive_mismatch { 0.08 } else { 0.03 });
        self.s.purchases.push(Purchase {
            t,
            channel,
            sku,
            qty,
            extra,
            discount,
            refund,
        });
    }

    fn plan_purchases(&mut self) {
        let (first, last) = (self.p.first_day, self.p.last_day);
        if self.p.rate <= 0.0 || last < first {
            return;
        }
        let cycle = 365.0 / self.p.rate;
        let jitter = if self.p.persona == Persona::Loyal {
            0.2
        } else {
            0.4
        };
        let mut d = if self.p.persona == Persona::New && self.chance(0.7) {
            first as f64
        } else {
            first as f64 + self.rng.random::<f64>() * cycle
        };
        let mut cycle = cycle;
        let mut n = 0;
        while (d as i64) <= last && n < 200 {
            let mut day = d as i64;
            // Promotions pull purchases forward or back to the peak.
            if self.chance(self.p.promo_pull) {
                if let Some(&peak) = self
                    .ctx
                    .peaks
                    .iter()
                    .find(|&&pk| pk >= day && pk <= day + 25)
                {
                    day = peak
                        - if self.chance(0.3) {
                            self.below(3) as i64
                        } else {
                            0
                        };
                }
            }
            let day = day.clamp(first, last);
            let promo = self.ctx.day_weight(day) > 1.5;
            self.add_purchase(day, promo, None);
            n += 1;
            if self.p.persona == Persona::Churning {
                cycle *= 1.25;
            }
            d = day as f64 + (cycle * (jitter * normal(&mut self.rng)).exp()).max(1.0);
        }
        // Impulse purchases on peak days.
        let impulse = match self.p.persona {
            Persona::BargainHunter => 0.5,
            Persona::Vip | Persona::Loyal => 0.15,
            _ => 0.08,
        };
        for i in 0..self.ctx.peaks.len() {
            let peak = self.ctx.peaks[i];
            if (first..=last).contains(&peak) && self.chance(impulse) {
                self.add_purchase(peak, true, None);
            }
        }
    }

    // ----- ecommerce, POS, app orders ------------------------------------------------------

    fn purchase(&mut self, pu: &Purchase) {
        let day = pu.t.div_euclid(DAY);
        if !self.in_window(day) {
            return;
        }
        self.touch(day);
        let total: i64 = SKUS[pu.sku].price * pu.qty as i64
            + pu.extra
                .iter()
                .flatten()
                .map(|&s| SKUS[s].price)
                .sum::<i64>();
        let paid = total - pu.discount;
        if !pu.refund {
            self.stats.orders += 1;
            self.stats.revenue += paid;
            self.stats.list_total += total;
            self.stats.discount_total += total - paid;
            self.stats.last_order = Some(day);
            self.stats.cats[SKUS[pu.sku].category] += 1;
        }
        self.stats.channels |= 1 << pu.channel;
        match pu.channel {
            CH_TMALL | CH_JD => self.ecommerce(pu, day, total, paid),
            CH_POS => self.pos(pu, day, total, paid),
            _ => {
                if pu.channel == CH_APP {
                    self.app_session(day, Some(pu));
                } else {
                    self.web_session(day, Some(pu));
                }
            }
        }
        if self.chance(if pu.refund { 0.6 } else { 0.04 }) {
            self.ticket(pu, day);
        }
    }

    fn ecommerce(&mut self, pu: &Purchase, day: i64, total: i64, paid: i64) {
        let tmall = pu.channel == CH_TMALL;
        let source = if tmall { TMALL } else { JD };
        let seq = self.next_seq();
        self.s.id.clear();
        push_u64(
            &mut self.s.id,
            mix64(seq ^ self.ctx.keys.hash(if tmall { 70 } else { 71 }, 0)),
        );
        self.s.order.clone_from(&self.s.id);
        let id_slot = if tmall { S_NICK } else { S_PIN };
        // A second number goes on later orders, once the account is known with the first.
        let phone_slot =
            if self.p.phone2.is_some() && self.linked(id_slot, S_PHONE) && self.chance(0.5) {
                S_PHONE2
            } else {
                S_PHONE
            };
        let masked = self.chance(if tmall { 0.05 } else { 0.08 } * self.noise());
        let fmt = if masked { PF_MASKED } else { PF_PLAIN };
        self.note(id_slot, 0);
        self.note(phone_slot, fmt);
        self.link((1 << id_slot) | if masked { 0 } else { 1 << phone_slot });
        let (city, province, _) = CITIES[self.p.city];
        let name = self.p.name();
        let sku = &SKUS[pu.sku];
        let b = &mut self.out.bufs[self.ctx.slot(source, day)];
        b.extend_from_slice(&self.s.id);
        b.push(b',');
        let ident = if tmall {
            self.p.nick.as_deref()
        } else {
            self.p.pin.as_deref()
        };
        push_csv(b, ident.unwrap_or(""));
        b.push(b',');
        b.extend_from_slice(name.as_bytes());
        b.push(b',');
        self.p.push_raw(b, phone_slot, fmt);
        b.push(b',');
        b.extend_from_slice(province.as_bytes());
        b.push(b',');
        b.extend_from_slice(city.as_bytes());
        b.push(b',');
        push_local(b, pu.t);
        b.push(b',');
        b.extend_from_slice(sku.code.as_bytes());
        b.push(b',');
        push_csv(b, sku.name);
        b.push(b',');
        b.extend_from_slice(CATEGORIES[sku.category].as_bytes());
        b.push(b',');
        push_u64(b, pu.qty as u64);
        b.push(b',');
        push_money(b, sku.price);
        b.push(b',');
        push_money(b, total - paid);
        b.push(b',');
        push_money(b, paid);
        b.push(b',');
        b.extend_from_slice(
            match (tmall, pu.refund) {
                (true, false) => "无退款",
                (true, true) => "退款成功",
                (false, false) => "无",
                (false, true) => "退款完成",
            }
            .as_bytes(),
        );
        b.push(b',');
        b.extend_from_slice(
            match (tmall, pu.refund) {
                (true, false) => "交易成功",
                (true, true) => "交易关闭",
                (false, false) => "完成",
                (false, true) => "已取消",
            }
            .as_bytes(),
        );
        if tmall {
            b.extend_from_slice(",悦颜官方旗舰店".as_bytes());
        }
        b.push(b'\n');
        self.record(source);
    }

    fn pos(&mut self, pu: &Purchase, day: i64, total: i64, paid: i64) {
        let test = self.p.test;
        let store = if test {
            TEST_STORE
        } else if self.chance(0.85) {
            STORES[self.p.home_store]
        } else {
            STORES[self.below(STORES.len())]
        };
        let seq = self.next_seq();
        self.s.id.clear();
        self.s.id.push(b'T');
        self.s.id.extend_from_slice(store.0.as_bytes());
        push_hex(&mut self.s.id, mix64(seq ^ self.ctx.keys.hash(72, 0)), 16);
        self.s.order.clone_from(&self.s.id);
        let member = self.p.member_id.is_some();
        let card = member && (test || self.chance(0.75));
        let give_phone = self.p.phone.is_some() && (!card || self.chance(0.3));
        let mut mask = 0u32;
        let mut fmt = PF_PLAIN;
        if card {
            self.note(S_MEMBER, 0);
            mask |= 1 << S_MEMBER;
        }
        if give_phone {
            fmt = if card && self.chance(0.005 * self.noise()) {
                PF_TYPO
            } else {
                self.phone_fmt(0.4)
            };
            self.note(S_PHONE, fmt);
            if fmt != PF_TYPO {
                mask |= 1 << S_PHONE;
            }
        }
        self.link(mask);
        let mut lines = std::mem::take(&mut self.s.tmp);
        lines.clear();
        lines.push(b'[');
        let items =
            std::iter::once((pu.sku, pu.qty)).chain(pu.extra.iter().flatten().map(|&s| (s, 1)));
        let mut count = 0;
        for (i, (s, q)) in items.enumerate() {
            if i > 0 {
                lines.push(b',');
            }
            let sku = &SKUS[s];
            lines.extend_from_slice(b"{\"product_id\":\"");
            lines.extend_from_slice(sku.code.as_bytes());
            lines.extend_from_slice(b"\",\"sku\":\"");
            lines.extend_from_slice(sku.code.as_bytes());
            lines.extend_from_slice(b"\",\"name\":");
            push_json_str(&mut lines, sku.name);
            lines.extend_from_slice(b",\"category\":\"");
            lines.extend_from_slice(CATEGORIES[sku.category].as_bytes());
            lines.extend_from_slice(b"\",\"price\":");
            push_money(&mut lines, sku.price);
            lines.extend_from_slice(b",\"quantity\":");
            push_u64(&mut lines, q as u64);
            lines.push(b'}');
            count += q;
        }
        lines.push(b']');
        let pay = PAYMENT_METHODS[weighted(&mut self.rng, &[5.0, 3.0, 1.5, 0.5])];
        let cashier = self.below(8);
        let b = &mut self.out.bufs[self.ctx.slot(POS, day)];
        b.extend_from_slice(&self.s.id);
        b.push(b',');
        b.extend_from_slice(store.0.as_bytes());
        b.push(b',');
        b.extend_from_slice(store.1.as_bytes());
        b.push(b',');
        b.extend_from_slice(CITIES[store.2].0.as_bytes());
        b.push(b',');
        push_local(b, pu.t);
        b.push(b',');
        if card {
            b.extend_from_slice(self.p.member_id.as_deref().unwrap_or("").as_bytes());
        }
        b.push(b',');
        if give_phone {
            self.p.push_raw(b, S_PHONE, fmt);
        }
        b.push(b',');
        push_csv(b, std::str::from_utf8(&lines).unwrap_or("[]"));
        b.push(b',');
        push_u64(b, count as u64);
        b.push(b',');
        push_money(b, paid);
        b.push(b',');
        push_money(b, total - paid);
        b.push(b',');
        b.extend_from_slice(pay.as_bytes());
        b.push(b',');
        b.extend_from_slice(store.0.as_bytes());
        b.extend_from_slice(b"-C");
        push_u64(b, cashier as u64 + 1);
        b.push(b'\n');
        self.s.tmp = lines;
        self.record(POS);
    }

    fn ticket(&mut self, pu: &Purchase, day: i64) {
        let day = (day + 1 + self.below(5) as i64).min(self.ctx.win.end);
        let t = self.at(day, Hours::Office);
        let wangwang = pu.channel == CH_TMALL && self.p.nick.is_some() && self.chance(0.6);
        if !wangwang && self.p.phone.is_none() {
            return;
        }
        let seq = self.next_seq();
        self.s.id.clear();
        self.s.id.extend_from_slice(b"TK");
        push_hex(&mut self.s.id, mix64(seq ^ self.ctx.keys.hash(73, 0)), 16);
        let channel = if wangwang { 3 } else { self.below(3) };
        let allergy =
            self.p.persona == Persona::SensitiveSkin && SKUS[pu.sku].category != CAT_SENSITIVE;
        let category = if pu.refund {
            if allergy && self.chance(0.5) {
                3
            } else {
                2
            }
        } else {
            [0, 1, 4, 5][self.below(4)]
        };
        let complaint = category == 3 || (pu.refund && self.chance(0.3)) || self.chance(0.03);
        let satisfaction = if self.chance(0.25) {
            None
        } else if complaint {
            Some(1 + self.below(3) as u64)
        } else {
            Some(3 + self.below(3) as u64)
        };
        let fmt = if wangwang {
            PF_PLAIN
        } else {
            self.phone_fmt(0.3)
        };
        if wangwang {
            self.note(S_NICK, 0);
        } else {
            self.note(S_PHONE, fmt);
        }
        self.touch(day);
        let status = if self.chance(0.9) {
            "已解决"
        } else {
            "处理中"
        };
        let b = &mut self.out.bufs[self.ctx.slot(SERVICE, day)];
        b.extend_from_slice(&self.s.id);
        b.push(b',');
        push_local(b, t);
        b.push(b',');
        b.extend_from_slice(SERVICE_CHANNELS[channel].as_bytes());
        b.push(b',');
        if !wangwang {
            self.p.push_raw(b, S_PHONE, fmt);
        }
        b.push(b',');
        if wangwang {
            push_csv(b, self.p.nick.as_deref().unwrap_or(""));
        }
        b.push(b',');
        b.extend_from_slice(TICKET_CATEGORIES[category].as_bytes());
        b.push(b',');
        if let Some(s) = satisfaction {
            push_u64(b, s);
        }
        b.push(b',');
        b.extend_from_slice(if complaint { "是" } else { "否" }.as_bytes());
        b.push(b',');
        b.extend_from_slice(&self.s.order);
        b.push(b',');
        b.extend_from_slice(status.as_bytes());
        b.push(b'\n');
        self.record(SERVICE);
    }

    // ----- Segment clickstream -------------------------------------------------------------

    /// Starts a Segment message: `{"type":…,"messageId":…,"anonymousId":…,"userId":…`.
    fn seg_start(&mut self, b_slot: usize, kind: &str, anon: Option<usize>, user: bool) -> u32 {
        let seq = self.next_seq();
        let hi = mix64(seq ^ self.ctx.keys.hash(80, 0));
        let lo = self.rng.random::<u64>();
        self.s.id.clear();
        push_uuid(&mut self.s.id, hi, lo, false);
        let mut mask = 0u32;
        let b = &mut self.out.bufs[b_slot];
        b.extend_from_slice(b"{\"type\":\"");
        b.extend_from_slice(kind.as_bytes());
        b.extend_from_slice(b"\",\"messageId\":\"");
        b.extend_from_slice(&self.s.id);
        b.push(b'"');
        if let Some(slot) = anon {
            b.extend_from_slice(b",\"anonymousId\":");
            if user && self.rng.random::<f64>() < 0.01 * self.ctx.win.noise {
                // Some SDK integrations send a placeholder once the user is known.
                let f = (self.rng.random::<u32>() % BLOCKED_ANON.len() as u32) as u16;
                push_json_str(b, BLOCKED_ANON[f as usize]);
                self.used[S_BLOCKED] |= 1 << f;
            } else {
                push_json_str(b, self.p.anon[slot - S_ANON].as_deref().unwrap_or(""));
                self.used[slot] |= 1;
                mask |= 1 << slot;
            }
        }
        if user {
            b.extend_from_slice(b",\"userId\":");
            push_json_str(b, self.p.member_id.as_deref().unwrap_or(""));
            self.used[S_USER] |= 1;
            mask |= 1 << S_USER;
        }
        mask
    }

    /// Ends a Segment message with its context and timestamp.
    fn seg_end(&mut self, b_slot: usize, context: &str, t: i64, source: usize) {
        let ms = self.below(1000) as u32;
        let b = &mut self.out.bufs[b_slot];
        b.extend_from_slice(b",\"context\":");
        b.extend_from_slice(context.as_bytes());
        b.extend_from_slice(b",\"timestamp\":\"");
        push_iso_utc(b, t, ms);
        b.extend_from_slice(b"\"}\n");
        self.record(source);
    }

    fn product_props(b: &mut Vec<u8>, sku: usize, qty: Option<u32>) {
        let s = &SKUS[sku];
        b.extend_from_slice(b"{\"product_id\":\"");
        b.extend_from_slice(s.code.as_bytes());
        b.extend_from_slice(b"\",\"sku\":\"");
        b.extend_from_slice(s.code.as_bytes());
        b.extend_from_slice(b"\",\"name\":");
        push_json_str(b, s.name);
        b.extend_from_slice(b",\"category\":\"");
        b.extend_from_slice(CATEGORIES[s.category].as_bytes());
        b.extend_from_slice(b"\",\"price\":");
        push_money(b, s.price);
        if let Some(q) = qty {
            b.extend_from_slice(b",\"quantity\":");
            push_u64(b, q as u64);
        }
        b.extend_from_slice(b",\"currency\":\"CNY\"}");
    }

    /// One Segment event: `kind` is track/screen/page; `name` the event or screen name;
    /// `props` writes the properties object.
    #[allow(clippy::too_many_arguments)]
    fn seg_event(
        &mut self,
        source: usize,
        t: i64,
        kind: &str,
        name: &str,
        anon: usize,
        device: Option<usize>,
        context: &str,
        props: &dyn Fn(&mut Vec<u8>),
    ) {
        let slot = self.ctx.slot(source, t.div_euclid(DAY));
        let user = self.identified[anon - S_ANON] && self.p.member_id.is_some();
        let mut mask = self.seg_start(slot, kind, Some(anon), user);
        if let Some(d) = device {
            self.used[S_DEVICE + d] |= 1;
            mask |= 1 << (S_DEVICE + d);
        }
        self.link(mask);
        let b = &mut self.out.bufs[slot];
        b.extend_from_slice(if kind == "track" {
            b",\"event\":"
        } else {
            b",\"name\":"
        });
        push_json_str(b, name);
        b.extend_from_slice(b",\"properties\":");
        props(b);
        self.seg_end(slot, context, t, source);
    }

    /// An identify call after login: traits at the top level (app) or in `context.traits`
    /// (web, as analytics.js sends them).
    fn seg_identify(
        &mut self,
        source: usize,
        t: i64,
        anon: usize,
        device: Option<usize>,
        context: &str,
    ) {
        let slot = self.ctx.slot(source, t.div_euclid(DAY));
        let mut mask = self.seg_start(slot, "identify", Some(anon), true);
        if let Some(d) = device {
            self.used[S_DEVICE + d] |= 1;
            mask |= 1 << (S_DEVICE + d);
        }
        let mut traits = std::mem::take(&mut self.s.tmp);
        traits.clear();
        traits.extend_from_slice(b"{\"member_id\":");
        push_json_str(&mut traits, self.p.member_id.as_deref().unwrap_or(""));
        self.used[S_MEMBER] |= 1;
        mask |= 1 << S_MEMBER;
        if self.p.phone.is_some() && self.chance(0.9) {
            let fmt = self.phone_fmt(0.2);
            traits.extend_from_slice(b",\"phone\":\"");
            self.p.push_raw(&mut traits, S_PHONE, fmt);
            traits.push(b'"');
            self.used[S_PHONE] |= 1 << fmt;
            mask |= 1 << S_PHONE;
        }
        if self.p.email.is_some() && self.chance(0.6) {
            let fmt = u16::from(self.chance(0.2 * self.noise()));
            let mut e = self.p.email.clone().unwrap_or_default();
            if fmt == 1 {
                e = email_variant(&e);
            }
            traits.extend_from_slice(b",\"email\":");
            push_json_str(&mut traits, &e);
            self.used[S_EMAIL] |= 1 << fmt;
            mask |= 1 << S_EMAIL;
        }
        if source == APP && self.p.unionid_in_app {
            traits.extend_from_slice(b",\"wechat_unionid\":");
            push_json_str(&mut traits, self.p.unionid.as_deref().unwrap_or(""));
            self.used[S_UNION] |= 1;
            mask |= 1 << S_UNION;
        }
        traits.extend_from_slice(b",\"name\":");
        push_json_str(&mut traits, &self.p.name());
        traits.extend_from_slice(b",\"gender\":\"");
        traits.extend_from_slice(match self.p.female {
            Some(true) => b"female".as_slice(),
            Some(false) => b"male",
            None => b"unknown",
        });
        traits.push(b'"');
        if self.p.has_birthday {
            traits.extend_from_slice(b",\"birthday\":\"");
            push_date(&mut traits, self.p.birthday);
            traits.push(b'"');
        }
        traits.push(b'}');
        self.link(mask);
        let b = &mut self.out.bufs[slot];
        if source == APP {
            b.extend_from_slice(b",\"traits\":");
            b.extend_from_slice(&traits);
            self.s.tmp = traits;
            self.seg_end(slot, context, t, source);
        } else {
            // analytics.js: traits only in context.traits.
            let mut ctx = String::with_capacity(context.len() + traits.len() + 16);
            ctx.push_str("{\"traits\":");
            ctx.push_str(std::str::from_utf8(&traits).unwrap_or("{}"));
            ctx.push(',');
            ctx.push_str(&context[1..]);
            self.s.tmp = traits;
            self.seg_end(slot, &ctx, t, source);
        }
    }

    fn app_session(&mut self, day: i64, purchase: Option<&Purchase>) {
        if self.p.devices.is_empty() {
            return;
        }
        let d = if self.p.devices.len() > 1 && self.chance(0.3) {
            1
        } else {
            0
        };
        let mid = (self.p.first_day + self.p.last_day) / 2;
        let anon = match d {
            0 if self.p.anon[1].is_some() && day > mid => S_ANON + 1,
            0 => S_ANON,
            _ => S_ANON + 2,
        };
        let context = std::mem::take(&mut self.p.devices[d].context);
        let mut t = match purchase {
            Some(pu) => pu.t - 60 * (3 + self.below(20) as i64),
            None => self.at(day, Hours::Online),
        };
        self.touch(day);
        let dev = Some(d);
        self.seg_event(APP, t, "screen", SCREENS[0], anon, dev, &context, &|b| {
            b.extend_from_slice(b"{}")
        });
        if !self.identified[anon - S_ANON] && self.p.member_id.is_some() && self.p.app_login {
            t += 5 + self.below(60) as i64;
            self.seg_identify(APP, t, anon, dev, &context);
            self.identified[anon - S_ANON] = true;
        }
        self.clicks(APP, &mut t, anon, dev, &context, purchase);
        self.p.devices[d].context = context;
    }

    fn web_context(&mut self, page: &str, path: &str, referrer: &str) -> String {
        let mut c = String::with_capacity(420);
        c.push_str(r#"{"library":{"name":"analytics.js","version":"next-1.70.0"},"locale":"zh-CN","timezone":"Asia/Shanghai","page":{"path":""#);
        c.push_str(path);
        c.push_str(r#"","url":"https://www.yueyan.cn"#);
        c.push_str(path);
        c.push_str(r#"","title":""#);
        c.push_str(page);
        c.push_str(r#" - 悦颜官方商城","referrer":""#);
        c.push_str(referrer);
        c.push_str(r#""},"userAgent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"}"#);
        c
    }

    fn web_session(&mut self, day: i64, purchase: Option<&Purchase>) {
        if self.p.cookies == 0 {
            return;
        }
        let c = if self.p.cookies > 1 && self.chance(0.4) {
            1
        } else {
            0
        };
        let anon = S_ANON + 3 + c;
        let mut t = match purchase {
            Some(pu) => pu.t - 60 * (3 + self.below(20) as i64),
            None => self.at(day, Hours::Online),
        };
        self.touch(day);
        let referrer = REFERRERS[self.below(REFERRERS.len())];
        let (page, path) = WEB_PAGES[self.below(WEB_PAGES.len())];
        let context = self.web_context(page, path, referrer);
        self.seg_event(WEB, t, "page", page, anon, None, &context, &|b| {
            b.extend_from_slice(b"{\"path\":");
            push_json_str(b, path);
            b.extend_from_slice(b",\"referrer\":");
            push_json_str(b, referrer);
            b.push(b'}');
        });
        if !self.identified[anon - S_ANON] && self.p.member_id.is_some() && self.p.web_login {
            t += 10 + self.below(120) as i64;
            self.seg_identify(WEB, t, anon, None, &context);
            self.identified[anon - S_ANON] = true;
        }
        self.clicks(WEB, &mut t, anon, None, &context, purchase);
    }

    /// Product views, searches, favourites, cart adds and, for a purchase, the checkout.
    fn clicks(
        &mut self,
        source: usize,
        t: &mut i64,
        anon: usize,
        dev: Option<usize>,
        context: &str,
        purchase: Option<&Purchase>,
    ) {
        if self.chance(0.3) {
            let cat = weighted(&mut self.rng, &self.p.cat_weights);
            let matching = QUERIES.iter().filter(|q| q.1 == cat).count();
            let nth = self.below(matching.max(1));
            let q = QUERIES
                .iter()
                .enumerate()
                .filter(|(_, q)| q.1 == cat)
                .nth(nth)
                .map_or(0, |(i, _)| i);
            *t += 5 + self.below(40) as i64;
            let query = QUERIES[q].0;
            self.seg_event(
                source,
                *t,
                "track",
                "Products Searched",
                anon,
                dev,
                context,
                &|b| {
                    b.extend_from_slice(b"{\"query\":");
                    push_json_str(b, query);
                    b.push(b'}');
                },
            );
        }
        let views = if purchase.is_some() {
            1
        } else {
            1 + self.below(2)
        };
        let mut last = self.pick_sku();
        for _ in 0..views {
            last = self.pick_sku();
            *t += 10 + self.below(90) as i64;
            if source == APP {
                self.seg_event(source, *t, "screen", SCREENS[2], anon, dev, context, &|b| {
                    b.extend_from_slice(b"{\"product_id\":\"");
                    b.extend_from_slice(SKUS[last].code.as_bytes());
                    b.extend_from_slice(b"\"}");
                });
            }
            *t += 1 + self.below(5) as i64;
            self.seg_event(
                source,
                *t,
                "track",
                "Product Viewed",
                anon,
                dev,
                context,
                &|b| Self::product_props(b, last, None),
            );
        }
        if self.chance(0.15) {
            *t += 5 + self.below(30) as i64;
            self.seg_event(
                source,
                *t,
                "track",
                "Product Favorited",
                anon,
                dev,
                context,
                &|b| Self::product_props(b, last, None),
            );
        }
        match purchase {
            None => {
                if self.chance(0.25) {
                    *t += 5 + self.below(60) as i64;
                    self.seg_event(
                        source,
                        *t,
                        "track",
                        "Product Added",
                        anon,
                        dev,
                        context,
                        &|b| Self::product_props(b, last, Some(1)),
                    );
                }
            }
            Some(pu) => {
                let pu = *pu;
                *t = (*t).min(pu.t - 30);
                self.seg_event(
                    source,
                    *t,
                    "track",
                    "Product Added",
                    anon,
                    dev,
                    context,
                    &|b| Self::product_props(b, pu.sku, Some(pu.qty)),
                );
                let total: i64 = SKUS[pu.sku].price * pu.qty as i64
                    + pu.extra
                        .iter()
                        .flatten()
                        .map(|&s| SKUS[s].price)
                        .sum::<i64>();
                let products = |b: &mut Vec<u8>| {
                    b.push(b'[');
                    Self::product_props(b, pu.sku, Some(pu.qty));
                    for &s in pu.extra.iter().flatten() {
                        b.push(b',');
                        Self::product_props(b, s, Some(1));
                    }
                    b.push(b']');
                };
                self.seg_event(
                    source,
                    pu.t - 20,
                    "track",
                    "Checkout Started",
                    anon,
                    dev,
                    context,
                    &|b| {
                        b.extend_from_slice(b"{\"value\":");
                        push_money(b, total);
                        b.extend_from_slice(b",\"currency\":\"CNY\",\"products\":");
                        products(b);
                        b.push(b'}');
                    },
                );
                let order = mix64(
                    ((self.p.idx << 20) | ((self.seq + 1) & 0xf_ffff)) ^ self.ctx.keys.hash(74, 0),
                );
                self.s.order.clear();
                self.s.order.push(if source == APP { b'A' } else { b'W' });
                push_hex(&mut self.s.order, order, 16);
                self.seg_event(
                    source,
                    pu.t,
                    "track",
                    "Order Completed",
                    anon,
                    dev,
                    context,
                    &|b| {
                        b.extend_from_slice(b"{\"order_id\":\"");
                        b.extend_from_slice(if source == APP { b"A" } else { b"W" });
                        push_hex(b, order, 16);
                        b.extend_from_slice(b"\",\"total\":");
                        push_money(b, total);
                        b.extend_from_slice(b",\"revenue\":");
                        push_money(b, total - pu.discount);
                        b.extend_from_slice(b",\"discount\":");
                        push_money(b, pu.discount);
                        b.extend_from_slice(b",\"currency\":\"CNY\",\"products\":");
                        products(b);
                        b.push(b'}');
                    },
                );
            }
        }
    }

    fn browsing(&mut self) {
        let (first, last) = (
            self.p.first_day,
            self.p.last_day.max(self.stats.last_active.unwrap_or(0)),
        );
        if last < first {
            return;
        }
        let years = (last - first + 1) as f64 / 365.0;
        let scale = self.ctx.win.scale;
        let app_n = if self.p.app {
            poisson(&mut self.rng, 0.5 * self.p.browse_rate * years * scale)
        } else {
            0
        };
        let web_n = if self.p.web {
            poisson(&mut self.rng, 0.4 * self.p.browse_rate * years * scale)
        } else {
            0
        };
        for i in 0..app_n + web_n {
            let day = self.session_day(first, last);
            if i < app_n {
                self.app_session(day, None);
            } else {
                self.web_session(day, None);
            }
        }
    }

    /// A day in `first..=last`, favouring promotion days mildly.
    fn session_day(&mut self, first: i64, last: i64) -> i64 {
        let span = (last - first + 1) as usize;
        for _ in 0..8 {
            let d = first + self.below(span) as i64;
            if self.rng.random::<f64>() * self.ctx.max_weight.sqrt() < self.ctx.day_weight(d).sqrt()
            {
                return d;
            }
        }
        first + self.below(span) as i64
    }

    // ----- WeChat --------------------------------------------------------------------------

    fn wx_row(&mut self, day: i64, t: i64, app: usize, event: &str, extra: [&str; 4]) {
        let seq = self.next_seq();
        self.s.id.clear();
        push_u64(&mut self.s.id, mix64(seq ^ self.ctx.keys.hash(75, 0)));
        let with_union = self.p.unionid.is_some() && (event == "Followed" || self.chance(0.5));
        let slot = S_OPENID + app;
        self.note(slot, 0);
        let mut mask = 1 << slot;
        if with_union {
            self.note(S_UNION, 0);
            mask |= 1 << S_UNION;
        }
        self.link(mask);
        let b = &mut self.out.bufs[self.ctx.slot(WX_INTERACTIONS, day)];
        b.extend_from_slice(&self.s.id);
        b.push(b',');
        push_local(b, t);
        b.push(b',');
        b.extend_from_slice(WX_APPS[app].appid.as_bytes());
        b.push(b',');
        b.extend_from_slice(self.p.openid[app].as_deref().unwrap_or("").as_bytes());
        b.push(b',');
        if with_union {
            b.extend_from_slice(self.p.unionid.as_deref().unwrap_or("").as_bytes());
        }
        b.push(b',');
        b.extend_from_slice(event.as_bytes());
        for e in extra {
            b.push(b',');
            b.extend_from_slice(e.as_bytes());
        }
        b.push(b'\n');
        self.record(WX_INTERACTIONS);
    }

    fn wechat(&mut self) {
        let scale = self.ctx.win.scale;
        for (a, app) in WX_APPS.iter().enumerate() {
            let Some((follow, unfollow)) = self.follow[a] else {
                continue;
            };
            let fday = follow.div_euclid(DAY);
            if !app.mini_program && self.in_window(fday) {
                self.touch(fday);
                self.wx_row(fday, follow, a, "Followed", ["", "", "", ""]);
            }
            if let Some(u) = unfollow {
                let uday = u.div_euclid(DAY);
                if self.in_window(uday) {
                    self.wx_row(uday, u, a, "Unfollowed", ["", "", "", ""]);
                }
            }
            self.follower_row(a, follow, unfollow);
            let active_from = fday.max(self.p.first_day).max(self.ctx.win.start);
            let active_to = unfollow
                .map_or(self.p.last_day, |u| u.div_euclid(DAY))
                .min(self.p.last_day);
            if active_to < active_from {
                continue;
            }
            let years = (active_to - active_from + 1) as f64 / 365.0;
            if app.mini_program {
                let n = poisson(&mut self.rng, 0.9 * self.p.engagement * years * scale);
                for _ in 0..n {
                    let day = self.session_day(active_from, active_to);
                    let mut t = self.at(day, Hours::Online);
                    self.touch(day);
                    for _ in 0..1 + self.below(3) {
                        let page = MP_PAGES[self.below(MP_PAGES.len())];
                        let sku = if page == "pages/goods/detail" {
                            SKUS[self.pick_sku()].code
                        } else {
                            ""
                        };
                        self.wx_row(day, t, a, "Mini Program Page Viewed", [page, "", "", sku]);
                        t += 5 + self.below(120) as i64;
                    }
                }
            } else if a == WX_OA {
                let n = poisson(&mut self.rng, 0.4 * self.p.engagement * years * scale);
                for _ in 0..n {
                    let day = self.session_day(active_from, active_to);
                    let t = self.at(day, Hours::Online);
                    let key = MENU_KEYS[self.below(MENU_KEYS.len())];
                    self.touch(day);
                    self.wx_row(day, t, a, "Menu Clicked", ["", "", key, ""]);
                }
            }
        }
    }

    fn follower_row(&mut self, a: usize, follow: i64, unfollow: Option<i64>) {
        let app = &WX_APPS[a];
        let slot = S_OPENID + a;
        self.note(slot, 0);
        let mut mask = 1 << slot;
        if self.p.unionid.is_some() {
            self.note(S_UNION, 0);
            mask |= 1 << S_UNION;
        }
        let phone = app.mini_program && self.p.mp_phone;
        if phone {
            self.note(S_PHONE, PF_PLAIN);
            mask |= 1 << S_PHONE;
        }
        self.link(mask);
        let scene = SUBSCRIBE_SCENES[self.below(SUBSCRIBE_SCENES.len())];
        self.s.id.clear();
        self.s.id.extend_from_slice(app.appid.as_bytes());
        self.s.id.push(b':');
        self.s
            .id
            .extend_from_slice(self.p.openid[a].as_deref().unwrap_or("").as_bytes());
        self.s.id.push(b':');
        let updated = unfollow.unwrap_or(follow);
        push_local(&mut self.s.id, updated);
        let b = &mut self.out.bufs[self.ctx.slot(WX_FOLLOWERS, 0)];
        b.extend_from_slice(app.appid.as_bytes());
        b.push(b',');
        b.extend_from_slice(app.name.as_bytes());
        b.push(b',');
        b.extend_from_slice(self.p.openid[a].as_deref().unwrap_or("").as_bytes());
        b.push(b',');
        if self.p.unionid.is_some() {
            b.extend_from_slice(self.p.unionid.as_deref().unwrap_or("").as_bytes());
        }
        b.push(b',');
        if !app.mini_program {
            b.push(if unfollow.is_some() { b'0' } else { b'1' });
        }
        b.push(b',');
        push_local(b, follow);
        b.push(b',');
        if let Some(u) = unfollow {
            push_local(b, u);
        }
        b.push(b',');
        if !app.mini_program {
            b.extend_from_slice(scene.as_bytes());
        }
        b.push(b',');
        if phone {
            self.p.push_raw(b, S_PHONE, PF_PLAIN);
        }
        b.push(b',');
        push_local(b, updated);
        b.push(b'\n');
        self.record(WX_FOLLOWERS);
    }

    // ----- marketing automation -------------------------------------------------------------

    fn campaigns(&mut self) {
        let scale = self.ctx.win.scale;
        let member = self.p.member_id.is_some();
        for ci in 0..self.ctx.campaigns.len() {
            let c = &self.ctx.campaigns[ci];
            let (day, audience, promo, channels) = (c.day, c.audience, c.promo, c.channels);
            if day < self.p.first_day || (!member && self.p.openid[WX_OA].is_none()) {
                continue;
            }
            let dormant_now = day > self.p.last_day + 45;
            let p = match audience {
                Audience::All => 0.012 * scale,
                Audience::Dormant => {
                    if dormant_now && member {
                        0.9
                    } else {
                        0.0
                    }
                }
                Audience::Vip => match self.p.persona {
                    Persona::Vip => 0.5,
                    Persona::Loyal => 0.05,
                    _ => 0.0,
                },
                Audience::New => {
                    if member && (0..=30).contains(&(day - self.p.registered_day)) {
                        0.7
                    } else {
                        0.0
                    }
                }
                Audience::Sensitive => {
                    if self.p.persona == Persona::SensitiveSkin {
                        0.5
                    } else {
                        0.005
                    }
                }
            };
            if !self.chance(p.min(1.0)) {
                continue;
            }
            // Reachable channels.
            let subscribed =
                |f: Follow, t: i64| f.is_some_and(|(a, u)| a <= t && u.is_none_or(|u| u > t));
            let t0 = day * DAY + 10 * 3600 + self.below(5400) as i64;
            let mut options = [false; 3];
            options[0] = channels & 1 != 0 && member && self.p.phone.is_some() && !self.p.test;
            options[1] = channels & 2 != 0 && subscribed(self.follow[WX_OA], t0);
            options[2] = channels & 4 != 0 && member && self.p.app;
            let n = options.iter().filter(|o| **o).count();
            if n == 0 {
                continue;
            }
            let mut pick = self.below(n);
            let ch = (0..3)
                .find(|&i| {
                    options[i] && {
                        let hit = pick == 0;
                        pick = pick.saturating_sub(1);
                        hit
                    }
                })
                .unwrap_or(0);
            let engaged = if dormant_now && audience != Audience::Dormant {
                0.3
            } else {
                self.p.engagement
            };
            let promo_boost = if promo && self.p.discount_hunter {
                1.5
            } else {
                1.0
            };
            let delivered = self.chance([0.97, 0.98, 0.9][ch]);
            let opened = delivered && ch != 0 && self.chance([0.0, 0.35, 0.2][ch] * engaged);
            let clicked = delivered
                && (ch == 0 || opened)
                && self.chance([0.06, 0.3, 0.3][ch] * engaged * promo_boost);
            let mut t = t0;
            self.ma_row(ci, ch, t, "Message Sent");
            if delivered {
                t += 2 + self.below(60) as i64;
                self.ma_row(ci, ch, t, "Message Delivered");
            }
            if opened {
                t += 60 + self.below(6 * 3600) as i64;
                self.ma_row(ci, ch, t, "Message Opened");
            }
            if clicked {
                t += 5 + self.below(if ch == 0 { 6 * 3600 } else { 300 }) as i64;
                self.ma_row(ci, ch, t, "Message Clicked");
                if ch == 1 {
                    let tday = t.div_euclid(DAY);
                    let tid = self.ctx.campaigns[ci].id.clone();
                    self.wx_row(
                        tday,
                        t + 1,
                        WX_OA,
                        "Template Message Clicked",
                        ["", &tid, "", ""],
                    );
                }
                let p_buy = match audience {
                    Audience::Dormant => 0.4,
                    _ if promo => 0.25,
                    _ => 0.1,
                };
                if self.p.rate > 0.0 && self.chance(p_buy) {
                    let buy = (t.div_euclid(DAY) + self.below(4) as i64).min(self.ctx.win.end);
                    if buy > self.p.last_day {
                        self.stats.reactivated = true;
                        self.p.last_day = buy;
                    }
                    let channel = (ch == 2).then_some(CH_APP);
                    self.add_purchase(buy, promo, channel);
                }
            }
        }
    }

    fn ma_row(&mut self, ci: usize, ch: usize, t: i64, event: &str) {
        let day = t.div_euclid(DAY);
        if !self.in_window(day) {
            return;
        }
        let seq = self.next_seq();
        self.s.id.clear();
        self.s.id.extend_from_slice(b"ev_");
        push_hex(&mut self.s.id, mix64(seq ^ self.ctx.keys.hash(76, 0)), 16);
        let slot = match ch {
            0 => S_PHONE,
            1 => S_OPENID + WX_OA,
            _ => S_MEMBER,
        };
        let fmt = if ch == 0 { 2 } else { 0 };
        let fmt = if self.noise() > 0.0 { fmt } else { PF_PLAIN };
        self.note(slot, fmt);
        let c = &self.ctx.campaigns[ci];
        let b = &mut self.out.bufs[self.ctx.slot(MA, day)];
        b.extend_from_slice(&self.s.id);
        b.push(b',');
        push_local(b, t);
        b.push(b',');
        b.extend_from_slice(c.id.as_bytes());
        b.push(b',');
        b.extend_from_slice(c.name.as_bytes());
        b.push(b',');
        b.extend_from_slice(MA_CHANNELS[ch].as_bytes());
        b.push(b',');
        b.extend_from_slice(event.as_bytes());
        b.push(b',');
        if ch == 0 {
            self.p.push_raw(b, S_PHONE, fmt);
        }
        b.push(b',');
        if ch == 1 {
            b.extend_from_slice(WX_APPS[WX_OA].appid.as_bytes());
        }
        b.push(b',');
        if ch == 1 {
            b.extend_from_slice(self.p.openid[WX_OA].as_deref().unwrap_or("").as_bytes());
        }
        b.push(b',');
        if ch == 2 {
            b.extend_from_slice(self.p.member_id.as_deref().unwrap_or("").as_bytes());
        }
        b.push(b',');
        if event == "Message Clicked" {
            b.extend_from_slice(b"https://m.yueyan.cn/c/");
            b.extend_from_slice(c.id.as_bytes());
        }
        b.push(b'\n');
        self.record(MA);
    }

    // ----- CRM -----------------------------------------------------------------------------

    fn crm(&mut self) {
        let Some(member_id) = self.p.member_id.clone() else {
            return;
        };
        let w = &self.ctx.win;
        let reg_t = self.p.registered_day * DAY + 10 * 3600 + self.below(11 * 3600) as i64;
        let updated_day = self
            .stats
            .last_order
            .unwrap_or(self.p.registered_day)
            .max(self.p.registered_day)
            .min(w.end);
        let updated = (updated_day * DAY + 20 * 3600 + self.below(4 * 3600) as i64).max(reg_t);
        let spend = self.p.pre_window_spend + self.stats.revenue;
        let level = LEVELS
            .iter()
            .rev()
            .find(|l| spend >= l.1)
            .map_or(LEVELS[0].0, |l| l.0);
        let points = (spend / 100) as u64 % 200_000;
        let mut mask = 1u32 << S_MEMBER;
        self.note(S_MEMBER, 0);
        let phone_fmt = if self.p.phone.is_some() {
            let f = if self.chance(0.005 * self.noise()) {
                PF_TYPO
            } else {
                self.phone_fmt(0.15)
            };
            self.note(S_PHONE, f);
            if f != PF_TYPO {
                mask |= 1 << S_PHONE;
            }
            Some(f)
        } else {
            None
        };
        let email_slot = if self.p.email_typo.is_some() {
            Some(S_EMAIL_TYPO)
        } else if self.p.email.is_some() {
            Some(S_EMAIL)
        } else {
            None
        };
        if let Some(s) = email_slot {
            self.note(s, 0);
            mask |= 1 << s;
        }
        self.link(mask);
        let store = if self.p.test {
            TEST_STORE.1
        } else if self.chance(0.5) {
            STORES[self.p.home_store].1
        } else {
            ONLINE_REGISTRATION[self.below(ONLINE_REGISTRATION.len())]
        };
        self.s.id.clear();
        self.s.id.extend_from_slice(member_id.as_bytes());
        self.s.id.push(b':');
        push_local(&mut self.s.id, updated);
        let name = self.p.name();
        let b = &mut self.out.bufs[self.ctx.slot(CRM, 0)];
        b.extend_from_slice(member_id.as_bytes());
        b.push(b',');
        b.extend_from_slice(name.as_bytes());
        b.push(b',');
        if let Some(f) = phone_fmt {
            self.p.push_raw(b, S_PHONE, f);
        }
        b.push(b',');
        if let Some(s) = email_slot {
            self.p.push_raw(b, s, 0);
        }
        b.push(b',');
        b.extend_from_slice(
            match self.p.female {
                Some(true) => "女",
                Some(false) => "男",
                None => "未知",
            }
            .as_bytes(),
        );
        b.push(b',');
        if self.p.has_birthday {
            push_date(b, self.p.birthday);
        }
        b.push(b',');
        b.extend_from_slice(CITIES[self.p.city].0.as_bytes());
        b.push(b',');
        b.extend_from_slice(level.as_bytes());
        b.push(b',');
        push_u64(b, points);
        b.push(b',');
        b.extend_from_slice(store.as_bytes());
        b.push(b',');
        push_local(b, reg_t);
        b.push(b',');
        push_local(b, updated);
        b.push(b'\n');
        self.record(CRM);
    }

    // ----- truth ---------------------------------------------------------------------------

    fn truth(&mut self) {
        let mut comp = [0u8; NSLOTS];
        for (s, c) in comp.iter_mut().enumerate() {
            *c = s as u8;
        }
        for g in &self.groups {
            let low = g.trailing_zeros() as u8;
            for (s, c) in comp.iter_mut().enumerate() {
                if g & (1 << s) != 0 {
                    *c = low;
                }
            }
        }
        let ids = &mut self.out.ids;
        for slot in 0..NSLOTS {
            let formats = self.used[slot];
            for fmt in 0..16u16 {
                if formats & (1 << fmt) == 0 {
                    continue;
                }
                ids.extend_from_slice(slot_type(slot).as_bytes());
                ids.push(b',');
                let start = ids.len();
                if slot == S_EMAIL && fmt == 1 {
                    ids.extend_from_slice(
                        email_variant(self.p.email.as_deref().unwrap_or("")).as_bytes(),
                    );
                } else {
                    self.p.push_raw(ids, slot, fmt);
                }
                if ids[start..].iter().any(|b| matches!(b, b',' | b'"')) {
                    let raw = String::from_utf8_lossy(&ids[start..]).into_owned();
                    ids.truncate(start);
                    push_csv(ids, &raw);
                }
                ids.push(b',');
                if (S_OPENID..S_OPENID + 3).contains(&slot) {
                    ids.extend_from_slice(WX_APPS[slot - S_OPENID].appid.as_bytes());
                }
                ids.push(b',');
                push_u64(ids, self.p.idx);
                ids.push(b',');
                push_u64(ids, comp[slot] as u64);
                ids.push(b'\n');
            }
        }
        // people.csv
        let p = &self.p;
        let st = &self.stats;
        let b = &mut self.out.people;
        push_u64(b, p.idx);
        b.push(b',');
        b.extend_from_slice(p.persona.name().as_bytes());
        b.push(b',');
        if let Some(h) = p.household {
            push_u64(b, h);
        }
        b.push(b',');
        b.extend_from_slice(match p.female {
            Some(true) => b"female".as_slice(),
            Some(false) => b"male",
            None => b"unknown",
        });
        b.push(b',');
        push_date(b, p.birthday);
        b.push(b',');
        b.extend_from_slice(CITIES[p.city].0.as_bytes());
        b.push(b',');
        b.push(if p.member_id.is_some() { b'1' } else { b'0' });
        b.push(b',');
        if let Some(d) = st.first_active {
            push_date(b, d);
        }
        b.push(b',');
        if let Some(d) = st.last_active {
            push_date(b, d);
        }
        b.push(b',');
        push_u64(b, st.orders as u64);
        b.push(b',');
        push_money(b, st.revenue);
        b.push(b',');
        let rate = (st.discount_total * 1000)
            .checked_div(st.list_total)
            .unwrap_or(0);
        b.extend_from_slice(format!("{}.{:03}", rate / 1000, rate % 1000).as_bytes());
        b.push(b',');
        if let Some(d) = st.last_order {
            push_date(b, d);
        }
        b.push(b',');
        if st.orders > 0 {
            let top = (0..7)
                .max_by_key(|&c| (st.cats[c], std::cmp::Reverse(c)))
                .unwrap_or(0);
            b.extend_from_slice(CATEGORIES[top].as_bytes());
        }
        b.push(b',');
        let sensitive = p.persona == Persona::SensitiveSkin || st.cats[CAT_SENSITIVE] >= 2;
        b.push(if sensitive { b'1' } else { b'0' });
        b.push(b',');
        b.push(if st.reactivated { b'1' } else { b'0' });
        b.push(b',');
        let mut first = true;
        for (i, name) in CHANNEL_NAMES.iter().enumerate() {
            if st.channels & (1 << i) != 0 {
                if !first {
                    b.push(b'|');
                }
                first = false;
                b.extend_from_slice(name.as_bytes());
            }
        }
        b.push(b'\n');
    }
}

/// The upper-case-domain spelling of an email (`li.lei@QQ.COM`), which normalises back.
fn email_variant(e: &str) -> String {
    match e.split_once('@') {
        Some((l, d)) => format!("{l}@{}", d.to_uppercase()),
        None => e.to_string(),
    }
}

/// Header of truth/identifiers.csv.
pub(crate) const IDS_HEADER: &str = "type,value,scope,person_id,component\n";
/// Header of truth/people.csv.
pub(crate) const PEOPLE_HEADER: &str = "person_id,persona,household,gender,birthday,city,member,first_active,last_active,orders,revenue,discount_rate,last_order,top_category,sensitive_skin,reactivated,purchase_channels\n";
/// Header of truth/records.csv.
pub(crate) const RECORDS_HEADER: &str = "source,record_id,person_id\n";
