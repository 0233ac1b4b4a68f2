//! The sources the generator writes: folder, file naming, CSV header and import mapping.

/// Source indexes (positions in [`SOURCES`]).
pub(crate) const CRM: usize = 0;
pub(crate) const WX_FOLLOWERS: usize = 1;
pub(crate) const WX_INTERACTIONS: usize = 2;
pub(crate) const TMALL: usize = 3;
pub(crate) const JD: usize = 4;
pub(crate) const POS: usize = 5;
pub(crate) const APP: usize = 6;
pub(crate) const WEB: usize = 7;
pub(crate) const SERVICE: usize = 8;
pub(crate) const MA: usize = 9;

/// Number of sources.
pub(crate) const NSOURCES: usize = 10;

/// How a source's files are written.
pub(crate) struct SourceDef {
    /// Source name and folder.
    pub name: &'static str,
    /// Kind: crm | wechat | ecommerce | pos | app | web | service | ma.
    pub kind: &'static str,
    /// File name stem.
    pub stem: &'static str,
    /// `csv` or `jsonl`.
    pub ext: &'static str,
    /// One file per calendar month (`stem_YYYY-MM.ext`) rather than one snapshot file.
    pub monthly: bool,
    /// CSV header line (without line break); empty for JSON lines.
    pub header: &'static str,
    /// Written in GBK rather than UTF-8.
    pub gbk: bool,
    /// The import mapping (YAML), `None` for Segment JSON lines sent to `/v1/batch`.
    pub mapping: Option<&'static str>,
    /// What the source is, for the manifest.
    pub description: &'static str,
}

/// All sources, in manifest order.
pub(crate) const SOURCES: [SourceDef; NSOURCES] = [
    SourceDef {
        name: "crm",
        kind: "crm",
        stem: "members",
        ext: "csv",
        monthly: false,
        header: "member_id,姓名,手机号,email,gender,birthday,city,member_level,points,registration_store,registered_at,updated_at",
        gbk: true,
        mapping: Some(CRM_MAPPING),
        description: "CRM member master data (会员主数据), one row per member, GBK CSV",
    },
    SourceDef {
        name: "wechat_followers",
        kind: "wechat",
        stem: "followers",
        ext: "csv",
        monthly: false,
        header: "appid,app_name,openid,unionid,subscribe,subscribe_time,unsubscribe_time,subscribe_scene,phone,updated_at",
        gbk: false,
        mapping: Some(FOLLOWERS_MAPPING),
        description: "WeChat users per official account / mini-program app id (openid, unionid for some, authorised phone)",
    },
    SourceDef {
        name: "wechat_interactions",
        kind: "wechat",
        stem: "interactions",
        ext: "csv",
        monthly: true,
        header: "msg_id,event_time,appid,openid,unionid,event,page_path,template_id,menu_key,sku",
        gbk: false,
        mapping: Some(INTERACTIONS_MAPPING),
        description: "WeChat follow/unfollow, template-message clicks, menu clicks and mini-program page views",
    },
    SourceDef {
        name: "tmall",
        kind: "ecommerce",
        stem: "orders",
        ext: "csv",
        monthly: true,
        header: "订单编号,买家会员名,收货人姓名,联系手机,收货地址省份,收货城市,付款时间,商家编码,宝贝标题,宝贝类目,购买数量,单价,优惠金额,实付金额,退款状态,订单状态,店铺名称",
        gbk: false,
        mapping: Some(TMALL_MAPPING),
        description: "Tmall flagship store order report (one row per order; receiver phone often masked)",
    },
    SourceDef {
        name: "jd",
        kind: "ecommerce",
        stem: "orders",
        ext: "csv",
        monthly: true,
        header: "订单号,用户账号,收货人,联系电话,省份,城市,付款时间,商品编号,商品名称,商品类目,数量,单价,优惠金额,应付金额,退款状态,订单状态",
        gbk: false,
        mapping: Some(JD_MAPPING),
        description: "JD self-operated store order export (one row per order; phone often masked)",
    },
    SourceDef {
        name: "pos",
        kind: "pos",
        stem: "transactions",
        ext: "csv",
        monthly: true,
        header: "transaction_id,store_id,store_name,store_city,txn_time,member_card,member_phone,lines,item_count,amount,discount,payment_method,cashier_id",
        gbk: false,
        mapping: Some(POS_MAPPING),
        description: "Store POS member transactions with basket lines (JSON column)",
    },
    SourceDef {
        name: "app",
        kind: "app",
        stem: "events",
        ext: "jsonl",
        monthly: true,
        header: "",
        gbk: false,
        mapping: None,
        description: "Brand app clickstream as Segment messages (identify/track/screen), ready for /v1/batch",
    },
    SourceDef {
        name: "web",
        kind: "web",
        stem: "events",
        ext: "jsonl",
        monthly: true,
        header: "",
        gbk: false,
        mapping: None,
        description: "Brand web shop clickstream as Segment messages (identify/track/page), ready for /v1/batch",
    },
    SourceDef {
        name: "service",
        kind: "service",
        stem: "tickets",
        ext: "csv",
        monthly: true,
        header: "ticket_id,created_at,channel,phone,buyer_nick,category,satisfaction,complaint,order_id,status",
        gbk: false,
        mapping: Some(SERVICE_MAPPING),
        description: "Customer-service tickets: channel, category, satisfaction 1-5, complaint flag",
    },
    SourceDef {
        name: "ma",
        kind: "ma",
        stem: "messages",
        ext: "csv",
        monthly: true,
        header: "event_id,event_time,campaign_id,campaign_name,channel,event,phone,appid,openid,member_id,link",
        gbk: false,
        mapping: Some(MA_MAPPING),
        description: "Marketing-automation feedback: message sent/delivered/opened/clicked per channel and campaign",
    },
];

const CRM_MAPPING: &str = r#"# CRM member master data (会员主数据): one row per member, GBK-encoded CSV.
kind: identify
format: csv
encoding: gbk
delimiter: ","
identifiers:
  member_id: member_id
  phone: 手机号
  email: email
timestamp: { column: updated_at, format: "%Y-%m-%d %H:%M:%S", timezone: Asia/Shanghai }
traits:
  name: 姓名
  gender: gender
  birthday: birthday
  city: city
  member_level: member_level
  points: { column: points, type: integer }
  registration_store: registration_store
  registered_at: registered_at
message_id: [member_id, updated_at]
"#;

const FOLLOWERS_MAPPING: &str = r#"# WeChat users per app id: official-account followers and mini-program users.
# unionid is present only where the user is known to the open platform; mini-program rows
# carry the phone number the user authorised.
kind: identify
format: csv
encoding: utf-8
delimiter: ","
identifiers:
  wechat_openid: { column: openid, scope_column: appid }
  wechat_unionid: unionid
  phone: phone
timestamp: { column: updated_at, format: "%Y-%m-%d %H:%M:%S", timezone: Asia/Shanghai }
traits:
  wechat_subscribed: { column: subscribe, type: boolean }
  wechat_subscribe_time: subscribe_time
  wechat_unsubscribe_time: unsubscribe_time
  wechat_subscribe_scene: subscribe_scene
message_id: [appid, openid, updated_at]
"#;

const INTERACTIONS_MAPPING: &str = r#"# WeChat interactions: Followed, Unfollowed, Template Message Clicked, Menu Clicked,
# Mini Program Page Viewed.
kind: track
event_column: event
format: csv
encoding: utf-8
delimiter: ","
identifiers:
  wechat_openid: { column: openid, scope_column: appid }
  wechat_unionid: unionid
timestamp: { column: event_time, format: "%Y-%m-%d %H:%M:%S", timezone: Asia/Shanghai }
properties:
  appid: appid
  page_path: page_path
  template_id: template_id
  menu_key: menu_key
  sku: sku
message_id: msg_id
"#;

const TMALL_MAPPING: &str = r#"# Tmall order report (订单报表), one row per order. 联系手机 is often masked
# (138****0000); a masked number is not an identifier, the buyer nick still is.
kind: track
event: Order Completed
format: csv
encoding: utf-8
delimiter: ","
identifiers:
  tmall_nick: 买家会员名
  phone: 联系手机
timestamp: { column: 付款时间, format: "%Y-%m-%d %H:%M:%S", timezone: Asia/Shanghai }
properties:
  order_id: 订单编号
  shop: 店铺名称
  sku: 商家编码
  product_name: 宝贝标题
  category: 宝贝类目
  quantity: { column: 购买数量, type: integer }
  price: { column: 单价, type: decimal }
  discount: { column: 优惠金额, type: decimal }
  revenue: { column: 实付金额, type: decimal }
  refund_status: 退款状态
  order_status: 订单状态
  receiver_province: 收货地址省份
  receiver_city: 收货城市
message_id: 订单编号
"#;

const JD_MAPPING: &str = r#"# JD order export, one row per order. 联系电话 is often masked.
kind: track
event: Order Completed
format: csv
encoding: utf-8
delimiter: ","
identifiers:
  jd_pin: 用户账号
  phone: 联系电话
timestamp: { column: 付款时间, format: "%Y-%m-%d %H:%M:%S", timezone: Asia/Shanghai }
properties:
  order_id: 订单号
  sku: 商品编号
  product_name: 商品名称
  category: 商品类目
  quantity: { column: 数量, type: integer }
  price: { column: 单价, type: decimal }
  discount: { column: 优惠金额, type: decimal }
  revenue: { column: 应付金额, type: decimal }
  refund_status: 退款状态
  order_status: 订单状态
  receiver_province: 省份
  receiver_city: 城市
message_id: 订单号
"#;

const POS_MAPPING: &str = r#"# Store POS member transactions. The member shows a card (member id) or gives a phone
# number in any format; basket lines are a JSON array in `lines`.
kind: track
event: Order Completed
format: csv
encoding: utf-8
delimiter: ","
identifiers:
  member_id: member_card
  phone: member_phone
timestamp: { column: txn_time, format: "%Y-%m-%d %H:%M:%S", timezone: Asia/Shanghai }
properties:
  order_id: transaction_id
  store_id: store_id
  store_name: store_name
  store_city: store_city
  products: { column: lines, type: json }
  quantity: { column: item_count, type: integer }
  revenue: { column: amount, type: decimal }
  discount: { column: discount, type: decimal }
  payment_method: payment_method
message_id: transaction_id
"#;

const SERVICE_MAPPING: &str = r#"# Customer-service tickets. Phone for hotline/online/WeChat tickets, buyer nick for
# Tmall Wangwang tickets.
kind: track
event: Service Ticket Created
format: csv
encoding: utf-8
delimiter: ","
identifiers:
  phone: phone
  tmall_nick: buyer_nick
timestamp: { column: created_at, format: "%Y-%m-%d %H:%M:%S", timezone: Asia/Shanghai }
properties:
  ticket_id: ticket_id
  channel: channel
  category: category
  satisfaction: { column: satisfaction, type: integer }
  complaint: { column: complaint, type: boolean }
  order_id: order_id
  status: status
message_id: ticket_id
"#;

const MA_MAPPING: &str = r#"# Marketing-automation feedback: Message Sent / Delivered / Opened / Clicked.
# SMS rows carry the phone, WeChat template rows the openid of the service account,
# app push rows the member id.
kind: track
event_column: event
format: csv
encoding: utf-8
delimiter: ","
identifiers:
  member_id: member_id
  phone: phone
  wechat_openid: { column: openid, scope_column: appid }
timestamp: { column: event_time, format: "%Y-%m-%d %H:%M:%S", timezone: Asia/Shanghai }
properties:
  campaign_id: campaign_id
  campaign_name: campaign_name
  channel: channel
  link: link
message_id: event_id
"#;
