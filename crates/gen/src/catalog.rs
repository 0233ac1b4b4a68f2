//! Static reference data: products, cities, stores, names, WeChat apps and the campaign
//! calendar. Every Chinese string here is GBK-encodable (the CRM export is GBK).

/// Product categories. Index into this table is the category id.
pub(crate) const CATEGORIES: &[&str] = &[
    "护肤",
    "彩妆",
    "香水",
    "身体护理",
    "敏感肌修护",
    "男士护理",
    "礼盒",
];

/// Category ids, for readability.
pub(crate) const CAT_SKINCARE: usize = 0;
pub(crate) const CAT_MAKEUP: usize = 1;
pub(crate) const CAT_FRAGRANCE: usize = 2;
pub(crate) const CAT_BODY: usize = 3;
pub(crate) const CAT_SENSITIVE: usize = 4;
pub(crate) const CAT_MEN: usize = 5;
pub(crate) const CAT_GIFT: usize = 6;

/// One product.
pub(crate) struct Sku {
    pub code: &'static str,
    pub name: &'static str,
    pub category: usize,
    /// List price in fen (1/100 yuan).
    pub price: i64,
}

const fn sku(code: &'static str, name: &'static str, category: usize, yuan: i64) -> Sku {
    Sku {
        code,
        name,
        category,
        price: yuan * 100,
    }
}

/// The catalogue of the brand (a beauty and personal-care brand, "悦颜").
pub(crate) const SKUS: &[Sku] = &[
    sku("SK1001", "焕颜精华液 30ml", CAT_SKINCARE, 590),
    sku("SK1002", "水润保湿面霜 50g", CAT_SKINCARE, 420),
    sku("SK1003", "清透防晒乳 SPF50+", CAT_SKINCARE, 260),
    sku("SK1004", "玻尿酸补水面膜 10片", CAT_SKINCARE, 199),
    sku("SK1005", "氨基酸洁面乳 120ml", CAT_SKINCARE, 129),
    sku("SK1006", "抗皱紧致眼霜 15ml", CAT_SKINCARE, 480),
    sku("SK1007", "平衡爽肤水 200ml", CAT_SKINCARE, 220),
    sku("MU2001", "丝绒哑光口红 #999", CAT_MAKEUP, 320),
    sku("MU2002", "持妆粉底液 30ml", CAT_MAKEUP, 450),
    sku("MU2003", "四色眼影盘", CAT_MAKEUP, 380),
    sku("MU2004", "防水纤长睫毛膏", CAT_MAKEUP, 190),
    sku("MU2005", "控油定妆散粉", CAT_MAKEUP, 280),
    sku("MU2006", "自然腮红", CAT_MAKEUP, 230),
    sku("FR3001", "花漾淡香水 50ml", CAT_FRAGRANCE, 780),
    sku("FR3002", "木质调香水 100ml", CAT_FRAGRANCE, 1280),
    sku("FR3003", "旅行装香水 10ml", CAT_FRAGRANCE, 220),
    sku("BD4001", "香氛沐浴露 500ml", CAT_BODY, 99),
    sku("BD4002", "滋润身体乳 250ml", CAT_BODY, 159),
    sku("BD4003", "护手霜三支装", CAT_BODY, 89),
    sku("BD4004", "柔顺洗发水 400ml", CAT_BODY, 119),
    sku("SN5001", "舒敏修护精华 30ml", CAT_SENSITIVE, 368),
    sku("SN5002", "敏感肌修护霜 50g", CAT_SENSITIVE, 298),
    sku("SN5003", "温和氨基酸洁面 100ml", CAT_SENSITIVE, 138),
    sku("SN5004", "舒缓保湿喷雾 150ml", CAT_SENSITIVE, 158),
    sku("SN5005", "屏障修护乳 100ml", CAT_SENSITIVE, 268),
    sku("MN6001", "男士控油洁面", CAT_MEN, 99),
    sku("MN6002", "男士保湿乳液", CAT_MEN, 199),
    sku("MN6003", "男士剃须泡沫", CAT_MEN, 79),
    sku("GF7001", "明星护肤礼盒", CAT_GIFT, 1580),
    sku("GF7002", "口红礼盒三支装", CAT_GIFT, 860),
    sku("GF7003", "新年限定香氛礼盒", CAT_GIFT, 1180),
];

/// First SKU index of each category (SKUS is grouped by category) and the count.
pub(crate) fn category_skus(category: usize) -> (usize, usize) {
    let start = SKUS
        .iter()
        .position(|s| s.category == category)
        .unwrap_or(0);
    let len = SKUS[start..]
        .iter()
        .take_while(|s| s.category == category)
        .count();
    (start, len.max(1))
}

/// Search queries typed in the app and on the web, by category.
pub(crate) const QUERIES: &[(&str, usize)] = &[
    ("精华", CAT_SKINCARE),
    ("面霜", CAT_SKINCARE),
    ("防晒", CAT_SKINCARE),
    ("面膜", CAT_SKINCARE),
    ("口红", CAT_MAKEUP),
    ("粉底液", CAT_MAKEUP),
    ("眼影", CAT_MAKEUP),
    ("香水", CAT_FRAGRANCE),
    ("身体乳", CAT_BODY),
    ("沐浴露", CAT_BODY),
    ("敏感肌", CAT_SENSITIVE),
    ("舒缓 修护", CAT_SENSITIVE),
    ("男士", CAT_MEN),
    ("礼盒", CAT_GIFT),
];

/// Cities: (city, province, relative weight).
pub(crate) const CITIES: &[(&str, &str, u32)] = &[
    ("上海", "上海", 12),
    ("北京", "北京", 11),
    ("广州", "广东", 8),
    ("深圳", "广东", 8),
    ("杭州", "浙江", 7),
    ("成都", "四川", 7),
    ("重庆", "重庆", 5),
    ("武汉", "湖北", 5),
    ("南京", "江苏", 5),
    ("苏州", "江苏", 4),
    ("西安", "陕西", 4),
    ("长沙", "湖南", 4),
    ("天津", "天津", 3),
    ("郑州", "河南", 3),
    ("青岛", "山东", 3),
    ("厦门", "福建", 2),
    ("沈阳", "辽宁", 2),
    ("昆明", "云南", 2),
    ("宁波", "浙江", 2),
    ("合肥", "安徽", 2),
];

/// Stores: (store id, name, city index).
pub(crate) const STORES: &[(&str, &str, usize)] = &[
    ("S0101", "上海南京西路店", 0),
    ("S0102", "上海环球港店", 0),
    ("S0103", "上海陆家嘴店", 0),
    ("S0201", "北京国贸店", 1),
    ("S0202", "北京三里屯店", 1),
    ("S0203", "北京西单店", 1),
    ("S0301", "广州天河城店", 2),
    ("S0302", "广州正佳店", 2),
    ("S0401", "深圳万象城店", 3),
    ("S0402", "深圳海岸城店", 3),
    ("S0501", "杭州湖滨店", 4),
    ("S0601", "成都太古里店", 5),
    ("S0602", "成都IFS店", 5),
    ("S0701", "重庆解放碑店", 6),
    ("S0801", "武汉楚河汉街店", 7),
    ("S0901", "南京新街口店", 8),
    ("S1001", "苏州观前街店", 9),
    ("S1101", "西安赛格店", 10),
    ("S1201", "长沙五一广场店", 11),
    ("S1301", "天津恒隆店", 12),
];

/// The test store used by QA accounts.
pub(crate) const TEST_STORE: (&str, &str, usize) = ("S9999", "测试门店", 0);

/// Online registration channels recorded in the CRM's registration store column.
pub(crate) const ONLINE_REGISTRATION: &[&str] =
    &["天猫旗舰店", "微信小程序", "官方App", "京东自营店"];

/// Surnames with pinyin.
pub(crate) const SURNAMES: &[(&str, &str)] = &[
    ("王", "wang"),
    ("李", "li"),
    ("张", "zhang"),
    ("刘", "liu"),
    ("陈", "chen"),
    ("杨", "yang"),
    ("黄", "huang"),
    ("赵", "zhao"),
    ("吴", "wu"),
    ("周", "zhou"),
    ("徐", "xu"),
    ("孙", "sun"),
    ("马", "ma"),
    ("朱", "zhu"),
    ("胡", "hu"),
    ("郭", "guo"),
    ("何", "he"),
    ("林", "lin"),
    ("高", "gao"),
    ("罗", "luo"),
];

/// Female given names with pinyin.
pub(crate) const GIVEN_F: &[(&str, &str)] = &[
    ("芳", "fang"),
    ("娜", "na"),
    ("敏", "min"),
    ("静", "jing"),
    ("丽", "li"),
    ("婷", "ting"),
    ("雪", "xue"),
    ("琳", "lin"),
    ("欣怡", "xinyi"),
    ("梓涵", "zihan"),
    ("雨桐", "yutong"),
    ("思琪", "siqi"),
    ("佳怡", "jiayi"),
    ("晓燕", "xiaoyan"),
    ("慧", "hui"),
    ("颖", "ying"),
];

/// Male given names with pinyin.
pub(crate) const GIVEN_M: &[(&str, &str)] = &[
    ("伟", "wei"),
    ("强", "qiang"),
    ("磊", "lei"),
    ("军", "jun"),
    ("洋", "yang"),
    ("勇", "yong"),
    ("杰", "jie"),
    ("浩然", "haoran"),
    ("子轩", "zixuan"),
    ("宇", "yu"),
    ("鹏", "peng"),
    ("博", "bo"),
];

/// Words Tmall buyers put in their nicks.
pub(crate) const NICK_WORDS: &[&str] = &[
    "小猫爱吃鱼",
    "快乐的小兔",
    "阳光女孩",
    "爱美丽",
    "橙子味的夏天",
    "甜甜圈",
    "奶茶控",
    "小确幸",
    "追风少年",
    "月亮不睡",
    "柠檬不萌",
    "草莓酱",
];

/// Email domains: (domain, weight). `qq.com` addresses are QQ numbers.
pub(crate) const EMAIL_DOMAINS: &[(&str, u32)] = &[
    ("qq.com", 45),
    ("163.com", 25),
    ("126.com", 8),
    ("sina.com", 5),
    ("gmail.com", 7),
    ("outlook.com", 5),
    ("icloud.com", 5),
];

/// Misspelt domains, used for the rare email typo.
pub(crate) const EMAIL_TYPO_DOMAINS: &[&str] =
    &["qq.con", "163.cm", "gmial.com", "126.co", "qq.om"];

/// Mainland mobile prefixes used for generated phones. `138` is left out on purpose: QA's
/// test number `13800138000` is the only `138` number, so it can never collide with a person.
pub(crate) const PHONE_PREFIXES: &[u64] = &[
    130, 131, 132, 133, 134, 135, 136, 137, 139, 150, 151, 152, 153, 155, 156, 157, 158, 159, 166,
    176, 177, 178, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 198, 199,
];

/// The phone number QA puts on test accounts.
pub(crate) const TEST_PHONE: u64 = 138_0013_8000;

/// Member levels by lifetime spend thresholds (fen).
pub(crate) const LEVELS: &[(&str, i64)] = &[
    ("普通会员", 0),
    ("银卡会员", 100_000),
    ("金卡会员", 300_000),
    ("钻石会员", 800_000),
];

/// A WeChat app of the brand.
pub(crate) struct WxApp {
    pub appid: &'static str,
    pub name: &'static str,
    /// Fixed prefix of the openids this app issues (real openids share one per app).
    pub openid_prefix: &'static str,
    /// Mini-program (page views, phone authorisation) rather than official account.
    pub mini_program: bool,
}

/// The brand's WeChat apps: service account, mini-program mall, subscription account.
pub(crate) const WX_APPS: &[WxApp] = &[
    WxApp {
        appid: "wx8f3a1b2c3d4e5f60",
        name: "悦颜服务号",
        openid_prefix: "oVx5t",
        mini_program: false,
    },
    WxApp {
        appid: "wx1a2b3c4d5e6f7a89",
        name: "悦颜商城小程序",
        openid_prefix: "o4Kq_",
        mini_program: true,
    },
    WxApp {
        appid: "wx5e6f7a8b9c0d1e23",
        name: "悦颜美妆订阅号",
        openid_prefix: "oPz2m",
        mini_program: false,
    },
];

/// Index of the service account (template messages), the mini-program and the subscription
/// account in [`WX_APPS`].
pub(crate) const WX_OA: usize = 0;
pub(crate) const WX_MP: usize = 1;
pub(crate) const WX_SUB: usize = 2;

/// Mini-program pages.
pub(crate) const MP_PAGES: &[&str] = &[
    "pages/index/index",
    "pages/category/index",
    "pages/goods/detail",
    "pages/cart/index",
    "pages/member/center",
    "pages/coupon/list",
];

/// Official account menu keys.
pub(crate) const MENU_KEYS: &[&str] =
    &["MEMBER_CENTER", "NEW_ARRIVALS", "STORE_LOCATOR", "SERVICE"];

/// Subscribe scenes as WeChat reports them.
pub(crate) const SUBSCRIBE_SCENES: &[&str] = &[
    "ADD_SCENE_QR_CODE",
    "ADD_SCENE_SEARCH",
    "ADD_SCENE_ARTICLE",
    "ADD_SCENE_PROFILE_CARD",
    "ADD_SCENE_OTHERS",
];

/// App screens.
pub(crate) const SCREENS: &[&str] = &["首页", "分类", "商品详情", "购物车", "我的", "会员中心"];

/// Web pages: (name, path).
pub(crate) const WEB_PAGES: &[(&str, &str)] = &[
    ("首页", "/"),
    ("新品", "/new"),
    ("会员中心", "/member"),
    ("门店查询", "/stores"),
];

/// Android devices: (manufacturer, model).
pub(crate) const ANDROID_MODELS: &[(&str, &str)] = &[
    ("HUAWEI", "ALN-AL00"),
    ("Xiaomi", "23013RK75C"),
    ("OPPO", "PHZ110"),
    ("vivo", "V2309A"),
    ("HONOR", "PGT-AN10"),
];

/// iPhone models.
pub(crate) const IPHONE_MODELS: &[&str] = &[
    "iPhone14,2",
    "iPhone14,7",
    "iPhone15,2",
    "iPhone16,1",
    "iPhone17,1",
];

/// Referrers of web sessions.
pub(crate) const REFERRERS: &[&str] = &[
    "https://www.baidu.com/",
    "https://www.xiaohongshu.com/",
    "https://weibo.com/",
    "https://www.douyin.com/",
    "",
];

/// Customer-service channels.
pub(crate) const SERVICE_CHANNELS: &[&str] = &["热线电话", "在线客服", "微信客服", "天猫旺旺"];

/// Ticket categories.
pub(crate) const TICKET_CATEGORIES: &[&str] = &[
    "产品咨询",
    "物流查询",
    "退换货",
    "过敏投诉",
    "会员积分",
    "发票",
];

/// POS payment methods.
pub(crate) const PAYMENT_METHODS: &[&str] = &["微信支付", "支付宝", "银联刷卡", "现金"];

/// Who a campaign targets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Audience {
    /// Every member (and follower, for WeChat).
    All,
    /// Members inactive for a long time (win-back).
    Dormant,
    /// High-value members.
    Vip,
    /// Recent sign-ups.
    New,
    /// People who bought the sensitive-skin line.
    Sensitive,
}

/// Campaign channels as the marketing-automation export names them.
pub(crate) const MA_CHANNELS: &[&str] = &["sms", "wechat_template", "app_push"];

/// One campaign of the calendar.
#[derive(Clone, Debug)]
pub(crate) struct Campaign {
    pub id: String,
    pub name: &'static str,
    /// Local day (days since 1970-01-01) it is sent.
    pub day: i64,
    /// Bit set of channels (bit i = `MA_CHANNELS[i]`).
    pub channels: u8,
    pub audience: Audience,
    /// Promotion campaign: clicks lead to discounted purchases.
    pub promo: bool,
}
