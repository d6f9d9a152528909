//! iPXE boot scripts: what a machine that asks `GET /boot.ipxe?mac=...` is told
//! to boot, decided by a pure function from what racklift knows of that MAC.
//!
//! - a node inspecting, cleaning or deploying → the racklift ramdisk, with the
//!   API URL and a per-boot agent token on the kernel command line;
//! - active or in service → boot the local disk;
//! - unknown while discovery is on → the ramdisk with a discovery token (its
//!   inventory enrols the machine);
//! - in maintenance, unknown, or with no work for the network → a message on the
//!   console and a retry loop (the machine never falls through to a random disk).

use crate::node::MacAddr;
use crate::state::State;

/// What the boot endpoint knows of the asking machine.
#[derive(Debug, Clone)]
pub enum BootView {
    /// No node has this MAC and discovery is off.
    Unknown,
    /// No node has this MAC; discovery is on and minted this token.
    Discover { token: String },
    /// A known node.
    Node {
        name: String,
        state: State,
        maintenance: bool,
        /// A token for this boot, when the node's step waits for the ramdisk.
        token: Option<String>,
    },
}

/// Where the ramdisk is and what it is told.
#[derive(Debug, Clone)]
pub struct RamdiskParams<'a> {
    pub api_url: &'a str,
    pub kernel_url: &'a str,
    pub initrd_url: &'a str,
    pub kernel_args: &'a str,
}

/// Seconds a waiting machine sleeps before asking again.
pub const RETRY_SECS: u32 = 30;

fn retry(msg: &str, mac: MacAddr, api_url: &str) -> String {
    format!(
        "#!ipxe\necho racklift: {msg}\necho racklift: asking again in {RETRY_SECS} s\nsleep {RETRY_SECS}\nchain --replace {api_url}/boot.ipxe?mac={mac}\n"
    )
}

/// The script that boots the ramdisk with `token` for this boot.
fn ramdisk(who: &str, token: &str, mac: MacAddr, p: &RamdiskParams<'_>) -> String {
    let bootif = format!("01-{}", mac.to_string().replace(':', "-"));
    format!(
        "#!ipxe\necho racklift: {who}\n\
         kernel {kernel} initrd=initrd.img racklift.api={api} racklift.token={token} BOOTIF={bootif} {args} || goto failed\n\
         initrd --name initrd.img {initrd} || goto failed\n\
         boot || goto failed\n\
         :failed\necho racklift: could not load the ramdisk; retrying in {RETRY_SECS} s\nsleep {RETRY_SECS}\nchain --replace {api}/boot.ipxe?mac={mac}\n",
        kernel = p.kernel_url,
        initrd = p.initrd_url,
        api = p.api_url,
        args = p.kernel_args,
    )
}

/// The iPXE script for `mac`.
pub fn script(view: &BootView, mac: MacAddr, p: &RamdiskParams<'_>) -> String {
    match view {
        BootView::Unknown => retry(
            &format!("{mac} is not enrolled and discovery is off; enrol it with POST /v1/nodes"),
            mac,
            p.api_url,
        ),
        BootView::Node {
            name,
            maintenance: true,
            ..
        } => retry(&format!("node {name} is in maintenance"), mac, p.api_url),
        BootView::Node {
            name,
            state: State::Active | State::InService | State::Configuring | State::ConfigureFailed,
            ..
        } => format!(
            "#!ipxe\necho racklift: node {name} boots from its local disk\nsanboot --no-describe --drive 0x80 || exit\n"
        ),
        BootView::Discover { token } => ramdisk(
            &format!("{mac} is not enrolled: it boots the racklift ramdisk to be discovered"),
            token,
            mac,
            p,
        ),
        BootView::Node {
            name,
            state,
            token: Some(token),
            ..
        } => ramdisk(
            &format!("node {name} ({state}) boots the racklift ramdisk"),
            token,
            mac,
            p,
        ),
        BootView::Node {
            name,
            state,
            token: None,
            ..
        } => retry(
            &format!("node {name} is {state}: nothing to boot from the network"),
            mac,
            p.api_url,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RamdiskParams<'static> = RamdiskParams {
        api_url: "http://10.0.0.1:8080",
        kernel_url: "http://10.0.0.1:8080/assets/ramdisk/vmlinuz",
        initrd_url: "http://10.0.0.1:8080/assets/ramdisk/initrd.img",
        kernel_args: "console=ttyS0",
    };

    fn mac() -> MacAddr {
        "52:54:00:00:00:01".parse().unwrap()
    }

    fn node(state: State, maintenance: bool, token: Option<&str>) -> BootView {
        BootView::Node {
            name: "n1".into(),
            state,
            maintenance,
            token: token.map(str::to_string),
        }
    }

    #[test]
    fn ramdisk_carries_api_and_token() {
        let s = script(&node(State::Inspecting, false, Some("rla_x")), mac(), &P);
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains("kernel http://10.0.0.1:8080/assets/ramdisk/vmlinuz initrd=initrd.img racklift.api=http://10.0.0.1:8080 racklift.token=rla_x BOOTIF=01-52-54-00-00-00-01 console=ttyS0"), "{s}");
        assert!(
            s.contains("initrd --name initrd.img http://10.0.0.1:8080/assets/ramdisk/initrd.img")
        );
    }

    #[test]
    fn installed_nodes_boot_their_disk_and_others_wait() {
        assert!(script(&node(State::Active, false, None), mac(), &P).contains("sanboot"));
        assert!(script(&node(State::InService, false, None), mac(), &P).contains("sanboot"));
        let m = script(&node(State::Inspecting, true, Some("t")), mac(), &P);
        assert!(
            m.contains("maintenance")
                && m.contains(
                    "chain --replace http://10.0.0.1:8080/boot.ipxe?mac=52:54:00:00:00:01"
                ),
            "{m}"
        );
        let u = script(&BootView::Unknown, mac(), &P);
        assert!(u.contains("not enrolled") && u.contains("sleep 30"), "{u}");
        let d = script(
            &BootView::Discover {
                token: "rld_x".into(),
            },
            mac(),
            &P,
        );
        assert!(
            d.contains("not enrolled: it boots the racklift ramdisk to be discovered")
                && d.contains("racklift.token=rld_x"),
            "{d}"
        );
        let idle = script(&node(State::Manageable, false, None), mac(), &P);
        assert!(
            idle.contains("nothing to boot") && !idle.contains("kernel"),
            "{idle}"
        );
    }
}
