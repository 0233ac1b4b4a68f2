//! Hidden people: persona, demographics, identifiers and behaviour parameters.
//!
//! Everything about person `i` is a function of `(seed, i)`: attributes come from a ChaCha8
//! stream keyed by the seed with stream number `i`; identifiers that must be unique across the
//! population (phone, member id, nick, pin, email) come from keyed permutations of `i`, so no
//! two people can collide and another person's values (a household head's phone) can be
//! recomputed without generating that person.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::catalog::*;
use crate::text::{mix64, push_b36, push_b64, push_hex, push_padded, push_u64, push_uuid, Affine};

/// The hidden behavioural type of a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Persona {
    Prospect,
    New,
    Casual,
    Loyal,
    BargainHunter,
    Vip,
    SensitiveSkin,
    Dormant,
    Churning,
    TestAccount,
}

impl Persona {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Prospect => "prospect",
            Self::New => "new",
            Self::Casual => "casual",
            Self::Loyal => "loyal",
            Self::BargainHunter => "bargain_hunter",
            Self::Vip => "high_arpu_vip",
            Self::SensitiveSkin => "sensitive_skin",
            Self::Dormant => "dormant",
            Self::Churning => "churning",
            Self::TestAccount => "test_account",
        }
    }
}

/// Persona shares of the real (non-test) population.
const PERSONA_SHARES: &[(Persona, f64)] = &[
    (Persona::Prospect, 0.14),
    (Persona::New, 0.10),
    (Persona::Casual, 0.22),
    (Persona::Loyal, 0.14),
    (Persona::BargainHunter, 0.12),
    (Persona::Vip, 0.04),
    (Persona::SensitiveSkin, 0.07),
    (Persona::Dormant, 0.09),
    (Persona::Churning, 0.08),
];

/// Identifier slots of one person: which of their identifiers a record carries.
pub(crate) const S_PHONE: usize = 0;
pub(crate) const S_PHONE2: usize = 1;
pub(crate) const S_EMAIL: usize = 2;
pub(crate) const S_EMAIL_TYPO: usize = 3;
pub(crate) const S_MEMBER: usize = 4;
pub(crate) const S_USER: usize = 5;
pub(crate) const S_UNION: usize = 6;
/// Openid of app `a` is slot `S_OPENID + a`.
pub(crate) const S_OPENID: usize = 7;
pub(crate) const S_NICK: usize = 10;
pub(crate) const S_PIN: usize = 11;
/// Anonymous ids: app device 0, its reinstall, app device 1, web cookie 0, web cookie 1.
pub(crate) const S_ANON: usize = 12;
pub(crate) const S_DEVICE: usize = 17;
/// Blocked placeholder anonymous ids (`undefined`, `null`).
pub(crate) const S_BLOCKED: usize = 19;
pub(crate) const NSLOTS: usize = 20;

/// Phone formats: bits of the per-slot format mask.
pub(crate) const PF_PLAIN: u16 = 0;
pub(crate) const PF_VARIANTS: u16 = 7;
pub(crate) const PF_MASKED: u16 = 7;
pub(crate) const PF_TYPO: u16 = 8;

/// Keys derived from the seed.
pub(crate) struct Keys {
    pub seed: u64,
    pub phone: Affine,
    pub member: Affine,
    pub qq: Affine,
    pub mail: Affine,
    pub nick: Affine,
    pub tb: Affine,
    pub pin: Affine,
    pub chacha: [u8; 32],
}

impl Keys {
    pub(crate) fn new(seed: u64) -> Self {
        let mut chacha = [0u8; 32];
        for (i, chunk) in chacha.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&mix64(seed ^ mix64(0xC0FFEE + i as u64)).to_le_bytes());
        }
        Self {
            seed,
            phone: Affine::new(seed, 1, PHONE_PREFIXES.len() as u64 * 100_000_000),
            member: Affine::new(seed, 2, 10_000_000_000),
            qq: Affine::new(seed, 3, 9_000_000_000),
            mail: Affine::new(seed, 4, 36u64.pow(7)),
            nick: Affine::new(seed, 5, 36u64.pow(7)),
            tb: Affine::new(seed, 6, 10_000_000_000),
            pin: Affine::new(seed, 7, 16u64.pow(13)),
            chacha,
        }
    }

    /// A hash of `(seed, salt, x)`.
    pub(crate) fn hash(&self, salt: u64, x: u64) -> u64 {
        mix64(mix64(self.seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ x)
    }

    /// A uniform number in `[0, 1)` from `(seed, salt, x)`.
    pub(crate) fn unit(&self, salt: u64, x: u64) -> f64 {
        (self.hash(salt, x) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The person's persona (a function of the index alone, so neighbours can be asked).
    pub(crate) fn persona(&self, idx: u64, noise: f64) -> Persona {
        let u = self.unit(11, idx);
        let test = (0.001 * noise).min(0.05);
        if u < test {
            return Persona::TestAccount;
        }
        let mut v = (u - test) / (1.0 - test);
        for &(p, share) in PERSONA_SHARES {
            if v < share {
                return p;
            }
            v -= share;
        }
        Persona::Casual
    }

    /// Primary mobile number (11 digits) of person `idx`: unique by construction.
    pub(crate) fn phone(&self, idx: u64) -> u64 {
        let x = self.phone.apply(idx);
        PHONE_PREFIXES[(x / 100_000_000) as usize] * 100_000_000 + x % 100_000_000
    }

    /// Whether odd person `idx` shares the phone of household head `idx - 1`.
    pub(crate) fn shares_phone(&self, idx: u64, people: u64, noise: f64) -> bool {
        if idx.is_multiple_of(2) || idx >= people {
            return false;
        }
        let p = (0.004 * noise).min(0.5);
        self.unit(12, idx / 2) < p
            && !matches!(
                self.persona(idx, noise),
                Persona::TestAccount | Persona::Prospect
            )
            && !matches!(
                self.persona(idx - 1, noise),
                Persona::TestAccount | Persona::Prospect
            )
    }
}

/// An app device.
pub(crate) struct Device {
    pub id: String,
    /// Precomputed Segment `context` JSON object text.
    pub context: String,
}

/// One hidden person.
pub(crate) struct Person {
    pub idx: u64,
    pub persona: Persona,
    pub test: bool,
    pub female: Option<bool>,
    pub birthday: i64,
    pub has_birthday: bool,
    pub surname: usize,
    pub given: usize,
    pub city: usize,
    /// Local days (inclusive) of the person's active period within the window.
    pub first_day: i64,
    pub last_day: i64,
    pub registered_day: i64,

    pub phone: Option<u64>,
    pub phone2: Option<u64>,
    /// The phone is shared with another person (household head or QA's test number).
    pub phone_shared: bool,
    /// Household head whose phone this person uses.
    pub household: Option<u64>,
    pub email: Option<String>,
    pub email_typo: Option<String>,
    pub member_id: Option<String>,
    pub unionid: Option<String>,
    pub openid: [Option<String>; 3],
    /// Mini-program row carries the authorised phone.
    pub mp_phone: bool,
    pub nick: Option<String>,
    pub pin: Option<String>,
    pub anon: [Option<String>; 5],
    pub devices: Vec<Device>,
    pub app_login: bool,
    pub web_login: bool,
    pub cookies: usize,
    pub unionid_in_app: bool,

    pub tmall: bool,
    pub jd: bool,
    pub pos: bool,
    pub app: bool,
    pub web: bool,
    pub home_store: usize,

    /// Purchases per year.
    pub rate: f64,
    pub promo_pull: f64,
    pub cat_weights: [f64; 7],
    pub staple: usize,
    pub price_taste: f64,
    pub discount_hunter: bool,
    pub engagement: f64,
    pub browse_rate: f64,
    pub pre_window_spend: i64,
}

pub(crate) fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng.random::<f64>() < p
}

pub(crate) fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

pub(crate) fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    if n <= 1 {
        0
    } else {
        rng.random_range(0..n)
    }
}

pub(crate) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = rng.random::<f64>().max(1e-12);
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

pub(crate) fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda > 30.0 {
        return (lambda + lambda.sqrt() * normal(rng)).round().max(0.0) as u32;
    }
    let l = (-lambda).exp();
    let mut k = 0;
    let mut p = rng.random::<f64>();
    while p > l {
        k += 1;
        p *= rng.random::<f64>();
    }
    k
}

pub(crate) fn weighted(rng: &mut ChaCha8Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

fn weighted_u32<T>(rng: &mut ChaCha8Rng, items: &[T], w: impl Fn(&T) -> u32) -> usize {
    let total: u32 = items.iter().map(&w).sum();
    let mut x = rng.random_range(0..total.max(1));
    for (i, it) in items.iter().enumerate() {
        if x < w(it) {
            return i;
        }
        x -= w(it);
    }
    items.len() - 1
}

/// What the window looks like, for building people.
pub(crate) struct Window {
    pub start: i64,
    pub end: i64,
    pub people: u64,
    pub noise: f64,
    pub scale: f64,
}

impl Person {
    /// Builds person `idx`.
    pub(crate) fn new(keys: &Keys, w: &Window, idx: u64, rng: &mut ChaCha8Rng) -> Self {
        use Persona::*;
        let noise = w.noise;
        let persona = keys.persona(idx, noise);
        let test = persona == TestAccount;
        let days = (w.end - w.start + 1).max(1);
        let female = match rng.random::<f64>() {
            x if x < 0.80 => Some(true),
            x if x < 0.98 => Some(false),
            _ => None,
        };
        let age_lo = match persona {
            Vip => 28.0,
            New => 18.0,
            _ => 20.0,
        };
        let age = uniform(rng, age_lo, if persona == New { 35.0 } else { 52.0 });
        let birthday = w.end - (age * 365.25) as i64 - below(rng, 365) as i64;
        let has_birthday = chance(rng, 0.9);
        let surname = below(rng, SURNAMES.len());
        let given = if female == Some(false) {
            below(rng, GIVEN_M.len())
        } else {
            below(rng, GIVEN_F.len())
        };
        let city = weighted_u32(rng, CITIES, |c| c.2);

        // Active period.
        let span = |rng: &mut ChaCha8Rng, lo: f64, hi: f64| -> i64 {
            // A duration scaled to short windows.
            let f = (days as f64 / 365.0).min(1.0);
            (uniform(rng, lo, hi) * f).round() as i64
        };
        let (first_day, last_day) = match persona {
            New => (w.end - span(rng, 0.0, 60.0).min(days - 1), w.end),
            Dormant => (w.start, (w.end - span(rng, 120.0, 300.0)).max(w.start)),
            Churning => (w.start, (w.end - span(rng, 30.0, 90.0)).max(w.start)),
            Prospect => {
                let f = w.start + below(rng, days as usize) as i64;
                (f, (f + span(rng, 0.0, 90.0)).min(w.end))
            }
            Casual if chance(rng, 0.4) => (w.start + below(rng, days as usize) as i64, w.end),
            TestAccount => (w.start + below(rng, days as usize) as i64, w.end),
            _ => (w.start, w.end),
        };

        // Channels.
        let buyer = !matches!(persona, Prospect | TestAccount);
        let member = match persona {
            Prospect => false,
            TestAccount | Vip => true,
            New => chance(rng, 0.7),
            Casual => chance(rng, 0.5),
            Loyal => chance(rng, 0.95),
            BargainHunter => chance(rng, 0.6),
            SensitiveSkin => chance(rng, 0.8),
            Dormant => chance(rng, 0.7),
            Churning => chance(rng, 0.8),
        };
        let registered_day = if first_day > w.start + 30 || persona == New {
            first_day
        } else {
            w.start - 30 - below(rng, 1500) as i64
        };
        let mut wechat = !test && chance(rng, if member { 0.7 } else { 0.5 });
        let mut tmall = buyer && chance(rng, 0.55);
        let jd = buyer && chance(rng, 0.25);
        let pos = test || (buyer && chance(rng, if persona == Vip { 0.7 } else { 0.45 }));
        let app_p = match persona {
            Loyal | Vip => 0.55,
            TestAccount => 0.5,
            _ => 0.35,
        };
        let mut app = member && chance(rng, app_p);
        let mut web = member && chance(rng, 0.2);
        if persona == Prospect {
            // An anonymous prospect is seen on one channel; on a second one (which nothing
            // links to the first) only at the noise rate.
            let first = weighted(rng, &[0.45, 0.35, 0.2]);
            let second = chance(rng, 0.02 * noise).then(|| (first + 1 + below(rng, 2)) % 3);
            wechat = first == 0 || second == Some(0);
            web = first == 1 || second == Some(1);
            app = first == 2 || second == Some(2);
        }
        if buyer && !(tmall || jd || pos || app) {
            tmall = true;
        }

        // Identifiers.
        let shared = keys.shares_phone(idx, w.people, noise);
        let (phone, household, phone_shared) = if test {
            (Some(TEST_PHONE), None, true)
        } else if shared {
            (Some(keys.phone(idx - 1)), Some(idx - 1), true)
        } else if persona == Prospect && !(wechat && chance(rng, 0.3)) {
            (None, None, false)
        } else {
            (Some(keys.phone(idx)), None, false)
        };
        let phone2 = (!test && !shared && phone.is_some() && chance(rng, 0.03))
            .then(|| keys.phone(w.people + idx));
        let (sp, gp) = (SURNAMES[surname].1, given_pinyin(female, given));
        let email = if test {
            let mut b = b"qa+".to_vec();
            push_b36(&mut b, keys.mail.apply(idx), 7);
            b.extend_from_slice(b"@yueyan.cn");
            Some(lossless(b))
        } else if member && chance(rng, 0.45) {
            Some(make_email(keys, rng, idx, sp, gp))
        } else {
            None
        };
        let email_typo = match &email {
            Some(e) if !test && chance(rng, 0.01 * noise) => {
                let local = e.split('@').next().unwrap_or("x");
                Some(format!(
                    "{local}@{}",
                    EMAIL_TYPO_DOMAINS[below(rng, EMAIL_TYPO_DOMAINS.len())]
                ))
            }
            _ => None,
        };
        let member_id = member.then(|| {
            let mut b = Vec::with_capacity(12);
            b.extend_from_slice(if test { b"TEST" } else { b"M" });
            push_padded(&mut b, keys.member.apply(idx), 10);
            lossless(b)
        });
        let has_union = wechat && chance(rng, 0.85);
        let unionid = has_union.then(|| {
            let mut b = b"o6_bm".to_vec();
            push_b64(&mut b, mix64(keys.hash(21, idx)), 11);
            push_b64(&mut b, keys.hash(22, idx), 10);
            b.extend_from_slice(b"Zw");
            lossless(b)
        });
        // Which apps the person uses: service account, mini-program, subscription account.
        // People with a phone authorise it in the mini-program (member registration, or
        // checkout), which links their WeChat side to the rest; a few never do (noise).
        let unlinked_wx = chance(rng, 0.006 * noise);
        let mut uses = [false; 3];
        if wechat {
            if has_union {
                uses[WX_OA] = persona == Prospect || chance(rng, 0.8);
                uses[WX_MP] = (phone.is_some() && !unlinked_wx) || chance(rng, 0.6);
                uses[WX_SUB] = chance(rng, 0.3);
                if !uses.iter().any(|u| *u) {
                    uses[WX_OA] = true;
                }
            } else {
                uses[WX_MP] = true;
            }
        }
        let openid = std::array::from_fn(|a| {
            uses[a].then(|| {
                let mut b = WX_APPS[a].openid_prefix.as_bytes().to_vec();
                push_b64(&mut b, mix64(keys.hash(30 + a as u64, idx)), 11);
                push_b64(&mut b, keys.hash(40 + a as u64, idx), 12);
                lossless(b)
            })
        });
        let mp_phone = uses[WX_MP] && phone.is_some() && !unlinked_wx;
        let nick = tmall.then(|| {
            let mut b = Vec::with_capacity(24);
            if chance(rng, 0.5) {
                b.extend_from_slice(b"tb");
                push_padded(&mut b, keys.tb.apply(idx), 10);
            } else {
                b.extend_from_slice(NICK_WORDS[below(rng, NICK_WORDS.len())].as_bytes());
                b.push(b'_');
                push_b36(&mut b, keys.nick.apply(idx), 7);
            }
            lossless(b)
        });
        let pin = jd.then(|| {
            let mut b = b"jd_".to_vec();
            push_hex(&mut b, keys.pin.apply(idx), 13);
            lossless(b)
        });
        let mut devices = Vec::new();
        let mut anon: [Option<String>; 5] = Default::default();
        if app {
            let n = if chance(rng, 0.12) { 2 } else { 1 };
            for d in 0..n {
                devices.push(make_device(keys, rng, idx, d as u64));
                anon[if d == 0 { 0 } else { 2 }] = Some(make_uuid(keys, 50 + d as u64, idx, false));
            }
            if chance(rng, 0.08) {
                anon[1] = Some(make_uuid(keys, 52, idx, false));
            }
        }
        let cookies = if web {
            if chance(rng, 0.15) {
                2
            } else {
                1
            }
        } else {
            0
        };
        for c in 0..cookies {
            anon[3 + c] = Some(make_uuid(keys, 53 + c as u64, idx, false));
        }
        let unionid_in_app = app && member && has_union && chance(rng, 0.3);

        // Behaviour.
        let base_rate = match persona {
            Prospect => 0.0,
            New => 4.0,
            Casual => 1.6,
            Loyal => 7.0,
            BargainHunter => 3.5,
            Vip => 10.0,
            SensitiveSkin => 5.0,
            Dormant => 4.0,
            Churning => 6.0,
            TestAccount => 4.0,
        };
        let rate = base_rate * (0.3 * normal(rng)).exp();
        let promo_pull = match persona {
            BargainHunter => 0.75,
            Casual => 0.3,
            Vip => 0.15,
            _ => 0.2,
        };
        let mut cat_weights = match (persona, female) {
            (SensitiveSkin, _) => [0.2, 0.05, 0.02, 0.1, 0.6, 0.0, 0.03],
            (Vip, Some(false)) => [0.25, 0.0, 0.3, 0.05, 0.0, 0.2, 0.2],
            (Vip, _) => [0.35, 0.15, 0.2, 0.05, 0.0, 0.0, 0.25],
            (_, Some(false)) => [0.2, 0.0, 0.15, 0.1, 0.02, 0.5, 0.03],
            _ => [0.35, 0.25, 0.1, 0.15, 0.05, 0.0, 0.1],
        };
        for w in cat_weights.iter_mut() {
            *w *= uniform(rng, 0.5, 1.5);
        }
        let fav = weighted(rng, &cat_weights);
        cat_weights[fav] *= 3.0;
        let (start, len) = category_skus(fav);
        let staple = start + below(rng, len);
        let price_taste = match persona {
            Vip => 1.0,
            BargainHunter => -0.5,
            _ => 0.0,
        };
        let browse_rate = match persona {
            Prospect => 1.2,
            Loyal | Vip => 3.0,
            BargainHunter => 2.5,
            Dormant => 1.2,
            _ => 1.8,
        } * (0.4 * normal(rng)).exp();
        let engagement = match persona {
            Vip | Loyal => 1.4,
            BargainHunter => 1.6,
            Dormant => 0.5,
            Churning => 0.6,
            _ => 1.0,
        };
        let years_before = ((first_day - registered_day).max(0) as f64 / 365.0).min(4.0);
        let pre_window_spend = (base_rate * years_before * 30_000.0 * (1.0 + price_taste)) as i64;
        Person {
            idx,
            persona,
            test,
            female,
            birthday,
            has_birthday,
            surname,
            given,
            city,
            first_day,
            last_day,
            registered_day,
            phone,
            phone2,
            phone_shared,
            household,
            email,
            email_typo,
            member_id,
            unionid,
            openid,
            mp_phone,
            nick,
            pin,
            anon,
            devices,
            app_login: member,
            web_login: member,
            cookies,
            unionid_in_app,
            tmall,
            jd,
            pos,
            app,
            web,
            home_store: city_store(city, rng),
            rate,
            promo_pull,
            cat_weights,
            staple,
            price_taste,
            discount_hunter: persona == BargainHunter,
            engagement,
            browse_rate,
            pre_window_spend,
        }
    }

    /// The person's name in Chinese.
    pub(crate) fn name(&self) -> String {
        if self.test {
            return "测试账号".to_string();
        }
        let given = if self.female == Some(false) {
            GIVEN_M[self.given].0
        } else {
            GIVEN_F[self.given].0
        };
        format!("{}{}", SURNAMES[self.surname].0, given)
    }

    /// Writes a raw identifier value of a slot in a format.
    pub(crate) fn push_raw(&self, buf: &mut Vec<u8>, slot: usize, fmt: u16) {
        match slot {
            S_PHONE | S_PHONE2 => {
                let n = if slot == S_PHONE {
                    self.phone
                } else {
                    self.phone2
                };
                push_phone(buf, n.unwrap_or(0), fmt);
            }
            S_EMAIL => buf.extend_from_slice(self.email.as_deref().unwrap_or("").as_bytes()),
            S_EMAIL_TYPO => {
                buf.extend_from_slice(self.email_typo.as_deref().unwrap_or("").as_bytes())
            }
            S_MEMBER | S_USER => {
                buf.extend_from_slice(self.member_id.as_deref().unwrap_or("").as_bytes())
            }
            S_UNION => buf.extend_from_slice(self.unionid.as_deref().unwrap_or("").as_bytes()),
            S_NICK => buf.extend_from_slice(self.nick.as_deref().unwrap_or("").as_bytes()),
            S_PIN => buf.extend_from_slice(self.pin.as_deref().unwrap_or("").as_bytes()),
            S_BLOCKED => {
                buf.extend_from_slice(BLOCKED_ANON[fmt as usize % BLOCKED_ANON.len()].as_bytes())
            }
            s if (S_OPENID..S_OPENID + 3).contains(&s) => buf.extend_from_slice(
                self.openid[s - S_OPENID]
                    .as_deref()
                    .unwrap_or("")
                    .as_bytes(),
            ),
            s if (S_ANON..S_ANON + 5).contains(&s) => {
                buf.extend_from_slice(self.anon[s - S_ANON].as_deref().unwrap_or("").as_bytes())
            }
            s if (S_DEVICE..S_DEVICE + 2).contains(&s) => buf.extend_from_slice(
                self.devices
                    .get(s - S_DEVICE)
                    .map_or("", |d| &d.id)
                    .as_bytes(),
            ),
            _ => {}
        }
    }
}

/// Placeholders apps send as anonymousId when they have none.
pub(crate) const BLOCKED_ANON: &[&str] = &["undefined", "null"];

/// Identifier type of a slot.
pub(crate) fn slot_type(slot: usize) -> &'static str {
    match slot {
        S_PHONE | S_PHONE2 => "phone",
        S_EMAIL | S_EMAIL_TYPO => "email",
        S_MEMBER => "member_id",
        S_USER => "user_id",
        S_UNION => "wechat_unionid",
        S_NICK => "tmall_nick",
        S_PIN => "jd_pin",
        s if (S_OPENID..S_OPENID + 3).contains(&s) => "wechat_openid",
        s if (S_DEVICE..S_DEVICE + 2).contains(&s) => "device_id",
        _ => "anonymous_id",
    }
}

/// Writes an 11-digit mainland mobile number in one of the formats people and systems use.
pub(crate) fn push_phone(buf: &mut Vec<u8>, n: u64, fmt: u16) {
    let (a, b, c) = (n / 100_000_000, n / 10_000 % 10_000, n % 10_000);
    let four = |buf: &mut Vec<u8>, x: u64| push_padded(buf, x, 4);
    match fmt {
        1 => {
            buf.extend_from_slice(b"+86 ");
            push_u64(buf, a);
            buf.push(b'-');
            four(buf, b);
            buf.push(b'-');
            four(buf, c);
        }
        2 => {
            buf.extend_from_slice(b"+86");
            push_u64(buf, n);
        }
        3 => {
            push_u64(buf, a);
            buf.push(b' ');
            four(buf, b);
            buf.push(b' ');
            four(buf, c);
        }
        4 => {
            buf.extend_from_slice(b"86-");
            push_u64(buf, n);
        }
        5 => {
            buf.extend_from_slice(b"0086 ");
            push_u64(buf, n);
        }
        6 => {
            push_u64(buf, a);
            buf.push(b'-');
            four(buf, b);
            buf.push(b'-');
            four(buf, c);
        }
        PF_MASKED => {
            push_u64(buf, a);
            buf.extend_from_slice(b"****");
            four(buf, c);
        }
        PF_TYPO => push_u64(buf, n / 10),
        _ => push_u64(buf, n),
    }
}

fn given_pinyin(female: Option<bool>, given: usize) -> &'static str {
    if female == Some(false) {
        GIVEN_M[given].1
    } else {
        GIVEN_F[given].1
    }
}

fn lossless(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_default()
}

fn make_email(keys: &Keys, rng: &mut ChaCha8Rng, idx: u64, surname: &str, given: &str) -> String {
    let d = weighted_u32(rng, EMAIL_DOMAINS, |d| d.1);
    let mut b = Vec::with_capacity(32);
    if d == 0 {
        push_u64(&mut b, 100_000_000 + keys.qq.apply(idx));
    } else {
        match below(rng, 3) {
            0 => {
                b.extend_from_slice(given.as_bytes());
                b.push(b'.');
                b.extend_from_slice(surname.as_bytes());
            }
            1 => {
                b.extend_from_slice(surname.as_bytes());
                b.extend_from_slice(given.as_bytes());
            }
            _ => {
                b.push(surname.as_bytes()[0]);
                b.extend_from_slice(given.as_bytes());
            }
        }
        b.push(b'_');
        push_b36(&mut b, keys.mail.apply(idx), 7);
    }
    b.push(b'@');
    b.extend_from_slice(EMAIL_DOMAINS[d].0.as_bytes());
    lossless(b)
}

/// A UUID from `(seed, salt, idx)`: distinct people get distinct values.
pub(crate) fn make_uuid(keys: &Keys, salt: u64, idx: u64, upper: bool) -> String {
    let mut b = Vec::with_capacity(36);
    let hi = mix64(idx ^ keys.hash(salt, 0));
    push_uuid(&mut b, hi, keys.hash(salt + 1000, idx), upper);
    lossless(b)
}

const IOS_VERSIONS: &[&str] = &["16.7.2", "17.5.1", "17.6", "18.1", "18.3.2"];
const ANDROID_VERSIONS: &[&str] = &["12", "13", "14", "15"];

fn make_device(keys: &Keys, rng: &mut ChaCha8Rng, idx: u64, d: u64) -> Device {
    let ios = chance(rng, 0.4);
    let (id, maker, model, os_version) = if ios {
        let m = IPHONE_MODELS[below(rng, IPHONE_MODELS.len())];
        (
            make_uuid(keys, 60 + d, idx, true),
            "Apple",
            m,
            IOS_VERSIONS[below(rng, IOS_VERSIONS.len())],
        )
    } else {
        let (maker, m) = ANDROID_MODELS[below(rng, ANDROID_MODELS.len())];
        let mut b = Vec::with_capacity(16);
        // Android ids are 64-bit: unique per (person, device) through the bijective mixer.
        push_hex(&mut b, mix64((idx << 2 | d) ^ keys.hash(62, 0)), 16);
        (
            lossless(b),
            maker,
            m,
            ANDROID_VERSIONS[below(rng, ANDROID_VERSIONS.len())],
        )
    };
    let mut ctx = String::with_capacity(400);
    ctx.push_str(r#"{"app":{"name":"悦颜","version":"6.3.0"},"device":{"id":""#);
    ctx.push_str(&id);
    ctx.push_str(r#"","manufacturer":""#);
    ctx.push_str(maker);
    ctx.push_str(r#"","model":""#);
    ctx.push_str(model);
    ctx.push_str(r#"","type":""#);
    ctx.push_str(if ios { "ios" } else { "android" });
    ctx.push_str(r#""},"os":{"name":""#);
    ctx.push_str(if ios { "iOS" } else { "Android" });
    ctx.push_str(r#"","version":""#);
    ctx.push_str(os_version);
    ctx.push_str(r#""},"library":{"name":""#);
    ctx.push_str(if ios {
        "analytics-ios"
    } else {
        "analytics-android"
    });
    ctx.push_str(r#"","version":""#);
    ctx.push_str(if ios { "4.1.8" } else { "4.11.3" });
    ctx.push_str(r#""},"locale":"zh-CN","timezone":"Asia/Shanghai"}"#);
    Device { id, context: ctx }
}

fn city_store(city: usize, rng: &mut ChaCha8Rng) -> usize {
    let local: Vec<usize> = (0..STORES.len()).filter(|&s| STORES[s].2 == city).collect();
    if local.is_empty() {
        below(rng, STORES.len())
    } else {
        local[below(rng, local.len())]
    }
}
