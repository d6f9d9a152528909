//! iPXE boot scripts: what a machine that asks `GET /boot.ipxe?mac=...` is told
//! to boot, decided by a pure function from what racklift knows of that MAC.
//!
//! - a node whose step waits for the ramdisk (inspecting, cleaning,
//!   deploying) → the racklift ramdisk, with the API URL and this boot's
//!   agent token on the kernel command line;
//! - active or in service → boot the local disk;
//! - unknown while discovery is on → the ramdisk with a discovery token (its
//!   inventory enrols the machine);
//! - anything else (unknown, in maintenance, no step, a boot whose token its
//!   agent has used already) → a message on the console and a retry loop (the
//!   machine never falls through to a random disk).
//!
//! The script is the answer to anybody on the boot network, so it says
//! nothing of a node beyond what booting needs: the node's name and state
//! appear only in the ramdisk script of a node with a step under way; why
//! there is nothing to boot is in the node's events, not on the wire.

use crate::app::agent::BootView;
use crate::node::MacAddr;

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
        BootView::Nothing => retry(
            &format!("nothing to boot from the network for {mac} now"),
            mac,
            p.api_url,
        ),
        BootView::LocalDisk => format!(
            "#!ipxe\necho racklift: {mac} boots from its local disk\nsanboot --no-describe --drive 0x80 || exit\n"
        ),
        BootView::TokenUsed => retry(
            "this boot's agent has started already: its ramdisk is not handed out again until racklift boots this machine again",
            mac,
            p.api_url,
        ),
        BootView::Discover { token } => ramdisk(
            &format!("{mac} is not enrolled: it boots the racklift ramdisk to be discovered"),
            token,
            mac,
            p,
        ),
        BootView::Ramdisk { name, state, token } => ramdisk(
            &format!("node {name} ({state}) boots the racklift ramdisk"),
            token,
            mac,
            p,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;

    const P: RamdiskParams<'static> = RamdiskParams {
        api_url: "http://10.0.0.1:8080",
        kernel_url: "http://10.0.0.1:8080/assets/ramdisk/vmlinuz",
        initrd_url: "http://10.0.0.1:8080/assets/ramdisk/initrd.img",
        kernel_args: "console=ttyS0",
    };

    fn mac() -> MacAddr {
        "52:54:00:00:00:01".parse().unwrap()
    }

    fn ramdisk_view(token: &str) -> BootView {
        BootView::Ramdisk {
            name: "n1".into(),
            state: State::Inspecting,
            token: token.into(),
        }
    }

    #[test]
    fn ramdisk_carries_api_and_token() {
        let s = script(&ramdisk_view("rla_x"), mac(), &P);
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains("kernel http://10.0.0.1:8080/assets/ramdisk/vmlinuz initrd=initrd.img racklift.api=http://10.0.0.1:8080 racklift.token=rla_x BOOTIF=01-52-54-00-00-00-01 console=ttyS0"), "{s}");
        assert!(
            s.contains("initrd --name initrd.img http://10.0.0.1:8080/assets/ramdisk/initrd.img")
        );
    }

    #[test]
    fn installed_nodes_boot_their_disk_and_others_wait() {
        let disk = script(&BootView::LocalDisk, mac(), &P);
        assert!(
            disk.contains("sanboot") && !disk.contains("kernel"),
            "{disk}"
        );
        for view in [BootView::Nothing, BootView::TokenUsed] {
            let s = script(&view, mac(), &P);
            assert!(
                s.contains("sleep 30")
                    && s.contains(
                        "chain --replace http://10.0.0.1:8080/boot.ipxe?mac=52:54:00:00:00:01"
                    )
                    && !s.contains("kernel")
                    && !s.contains("token"),
                "{s}"
            );
        }
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
    }
}
