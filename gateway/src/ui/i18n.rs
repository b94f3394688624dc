//! The dashboard's two languages: every label of the page and the charts,
//! in English and Simplified Chinese. The page takes its labels from
//! `/ui/i18n.json` (both tables); the server renders chart labels in the
//! language a request names.

use serde_json::{Map, Value};

/// A language of the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English.
    En,
    /// Simplified Chinese (zh-CN).
    Zh,
}

impl Lang {
    /// `zh` (or any `zh-*`) is Chinese; anything else English.
    pub fn parse(s: &str) -> Self {
        if s.to_ascii_lowercase().starts_with("zh") {
            Self::Zh
        } else {
            Self::En
        }
    }

    /// The first language of an `Accept-Language` header we speak.
    pub fn from_accept_language(header: &str) -> Self {
        for part in header.split(',') {
            let tag = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if tag.starts_with("zh") {
                return Self::Zh;
            }
            if tag.starts_with("en") {
                return Self::En;
            }
        }
        Self::En
    }

    /// The BCP 47 tag for `<html lang>`.
    pub fn tag(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Zh => "zh-CN",
        }
    }
}

/// `(key, English, Chinese)`.
const TABLE: &[(&str, &str, &str)] = &[
    ("title", "Attendance statistics", "考勤数据统计"),
    ("sign_in", "Sign in", "登录"),
    ("sign_out", "Sign out", "退出"),
    ("token", "Admin token", "管理令牌"),
    (
        "token_hint",
        "Paste an admin bearer token (super, tenant or supervisor). It stays in this tab only.",
        "粘贴管理令牌（超级管理员、租户管理员或主管）。令牌仅保存在当前标签页。",
    ),
    ("bad_token", "This token was not accepted.", "令牌无效。"),
    ("tenant", "Tenant", "租户"),
    ("department", "Department", "部门"),
    ("all_departments", "All departments", "全部部门"),
    ("from", "From", "开始日期"),
    ("to", "To", "结束日期"),
    ("apply", "Apply", "应用"),
    ("language", "中文", "English"),
    ("csv", "Download CSV", "下载 CSV"),
    ("no_data", "No data in this range.", "所选范围内没有数据。"),
    ("timezone", "Dates in", "日期时区"),
    ("chart_trend", "Attendance rate", "出勤率趋势"),
    ("by_day", "Day", "按日"),
    ("by_week", "Week", "按周"),
    ("by_month", "Month", "按月"),
    ("chart_late", "Top 10 late", "迟到前十名"),
    ("chart_early", "Top 10 early leave", "早退前十名"),
    ("chart_radar", "Departments compared", "部门对比"),
    ("chart_causes", "Abnormal punches by cause", "异常打卡原因"),
    ("chart_heatmap", "Punch locations", "打卡位置热力图"),
    ("chart_overtime", "Overtime hours", "加班时长"),
    (
        "chart_methods",
        "Punch methods and devices",
        "打卡方式与设备",
    ),
    ("date", "Date", "日期"),
    ("period", "Period", "周期"),
    ("expected", "Expected days", "应出勤人天"),
    ("attended", "Attended days", "实际出勤人天"),
    ("rate", "Attendance rate (%)", "出勤率（%）"),
    ("employee", "Employee", "员工"),
    ("days", "Days", "天数"),
    ("minutes", "Minutes", "分钟"),
    ("hours", "Hours", "小时"),
    ("punches", "Punches", "打卡次数"),
    ("axis_attendance", "Attendance %", "出勤率 %"),
    ("axis_late", "Late %", "迟到率 %"),
    ("axis_missing", "Missing", "缺卡"),
    ("axis_overtime", "Overtime h", "加班小时"),
    ("axis_field", "Field %", "外勤占比 %"),
    ("cause", "Cause", "原因"),
    ("cause_late", "Late", "迟到"),
    ("cause_early", "Early leave", "早退"),
    ("cause_missing", "Missing punch", "缺卡"),
    ("cause_out_of_range", "Out of range", "范围外"),
    (
        "cause_rejected",
        "Wi-Fi/QR/terminal failed",
        "Wi-Fi/二维码/终端校验失败",
    ),
    ("cause_anti_cheat", "Anti-cheat flag", "防作弊标记"),
    ("method", "Method", "方式"),
    ("method_gps", "Phone GPS", "手机定位"),
    ("method_wifi", "Wi-Fi", "Wi-Fi"),
    ("method_qr", "QR code", "二维码"),
    ("method_terminal", "Terminal", "考勤机"),
    ("method_other", "Other", "其他"),
    ("device", "Terminal", "考勤机"),
    ("cell", "H3 cell", "H3 网格"),
    ("out_of_range", "Out of range", "范围外"),
    ("nearest_fence", "Nearest fence", "最近围栏"),
    ("fence", "Fence", "围栏"),
    ("total", "Total", "合计"),
    ("chart_live", "Fleet live view", "车队实时位置"),
    (
        "no_devices",
        "No device of this tenant has sent a position to this node lately.",
        "近期没有本租户的设备向本节点上报位置。",
    ),
    ("live_device", "Device", "设备"),
    ("time", "Time", "时间"),
    ("latitude", "Latitude", "纬度"),
    ("longitude", "Longitude", "经度"),
    ("in_fences", "In fences", "所在围栏"),
    ("outside", "outside every fence", "不在任何围栏内"),
    (
        "last_events",
        "Last enter/exit events",
        "最近的进出围栏事件",
    ),
    ("event", "Event", "事件"),
    ("enter", "Entered", "进入"),
    ("exit", "Left", "离开"),
];

/// The label `key` in `lang` (the key itself when unknown, so a missing
/// label shows up instead of vanishing).
pub fn t(lang: Lang, key: &str) -> &str {
    TABLE
        .iter()
        .find(|(k, _, _)| *k == key)
        .map_or(key, |(_, en, zh)| match lang {
            Lang::En => en,
            Lang::Zh => zh,
        })
}

/// Both tables as JSON: `{"en": {key: label}, "zh": {...}}`.
pub fn tables_json() -> Value {
    let mut en = Map::new();
    let mut zh = Map::new();
    for (k, e, z) in TABLE {
        en.insert((*k).into(), (*e).into());
        zh.insert((*k).into(), (*z).into());
    }
    let mut all = Map::new();
    all.insert("en".into(), Value::Object(en));
    all.insert("zh".into(), Value::Object(zh));
    Value::Object(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_first_spoken() {
        assert_eq!(
            Lang::from_accept_language("zh-CN,zh;q=0.9,en;q=0.8"),
            Lang::Zh
        );
        assert_eq!(
            Lang::from_accept_language("de-DE,en;q=0.5,zh;q=0.1"),
            Lang::En
        );
        assert_eq!(Lang::from_accept_language(""), Lang::En);
    }

    #[test]
    fn every_key_is_unique_and_translated() {
        let mut keys: Vec<&str> = TABLE.iter().map(|(k, _, _)| *k).collect();
        keys.sort_unstable();
        let n = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), n, "duplicate i18n key");
        assert!(TABLE.iter().all(|(_, e, z)| !e.is_empty() && !z.is_empty()));
    }
}
