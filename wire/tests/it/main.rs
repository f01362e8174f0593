//! One test binary for the crate (matklad's "Delete Cargo Integration Tests"): the vendors'
//! published vectors first, then our own round trips and properties.

mod alipay_vendor;
mod wechat_vendor;

mod alipay_flows;
mod properties;
mod wechat_flows;
