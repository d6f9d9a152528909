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
//! When the ramdisk racklift serves itself is not there (`boot.ramdisk_dir`
//! missing or empty: [`ramdisk_missing`]), the script of a machine that would
//! boot it says so on its console before the kernel line, whose 404 then
//! sends it to the retry loop: iPXE alone would show only the 404.
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
    /// Why the ramdisk cannot be booted now, for the console
    /// ([`RamdiskMissing::console`]), if it cannot.
    pub missing: Option<&'a str>,
}

/// The command that builds the ramdisk, as the messages name it.
pub const BUILD_COMMAND: &str = "bash boot-assets/build-ramdisk.sh --out <boot.ramdisk_dir>";

/// Why the ramdisk racklift serves from `boot.ramdisk_dir` cannot be booted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamdiskMissing {
    /// For the log and `/healthz`: the directory, each file and the build command.
    pub detail: String,
    /// For a machine's console: the files, not where the server keeps them.
    pub console: String,
}

/// What is wrong with the ramdisk racklift serves from `boot.ramdisk_dir`,
/// or `None` when both files are there (non-empty regular files). A kernel or
/// initrd URL outside racklift's own `/assets/ramdisk/` is another server's
/// business and is not checked.
pub fn ramdisk_missing(
    boot: &crate::config::BootConfig,
    public_url: &str,
) -> Option<RamdiskMissing> {
    let mount = format!("{}/assets/ramdisk/", public_url.trim_end_matches('/'));
    let dir = &boot.ramdisk_dir;
    let mut missing = Vec::new();
    for (key, url) in [
        ("kernel_url", &boot.kernel_url),
        ("initrd_url", &boot.initrd_url),
    ] {
        let Some(name) = url.strip_prefix(&mount) else {
            continue;
        };
        let what = match std::fs::metadata(dir.join(name)) {
            Ok(m) if m.is_file() && m.len() > 0 => continue,
            Ok(m) if m.is_file() => "empty",
            Ok(_) => "not a file",
            Err(_) => "missing",
        };
        missing.push((name, what, key));
    }
    if missing.is_empty() {
        return None;
    }
    let shown = std::fs::canonicalize(dir).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(dir))
            .unwrap_or_else(|_| dir.clone())
    });
    let list = |with_key: bool| {
        missing
            .iter()
            .map(|(name, what, key)| match with_key {
                true => format!("{name} is {what} (boot.{key})"),
                false => format!("{name} is {what}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(RamdiskMissing {
        detail: format!(
            "the ramdisk cannot be served: in boot.ramdisk_dir {}, {}; build it with `{BUILD_COMMAND}`",
            shown.display(),
            list(true)
        ),
        console: format!(
            "the server has no ramdisk to give ({}): its operator builds it with build-ramdisk.sh",
            list(false)
        ),
    })
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
    // Said first, so the console shows why the kernel line fails; the load
    // is still tried, and a ramdisk built meanwhile is booted.
    let warning = p
        .missing
        .map(|why| format!("echo racklift: warning: {why}\n"))
        .unwrap_or_default();
    let bootif = format!("01-{}", mac.to_string().replace(':', "-"));
    format!(
        "#!ipxe\necho racklift: {who}\n{warning}\
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
        missing: None,
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

    #[test]
    fn a_missing_ramdisk_is_said_on_the_console_before_the_kernel_line() {
        let p = RamdiskParams {
            missing: Some("the ramdisk cannot be served: vmlinuz is missing"),
            ..P
        };
        let s = script(&ramdisk_view("rla_x"), mac(), &p);
        let warned = s
            .find("echo racklift: warning: the ramdisk cannot be served: vmlinuz is missing\n")
            .expect(&s);
        // Still tried (a ramdisk built meanwhile boots), after the warning,
        // and a failed load loops back.
        assert!(s.find("kernel http").is_some_and(|k| k > warned), "{s}");
        assert!(
            s.contains("racklift.token=rla_x") && s.contains(":failed"),
            "{s}"
        );
        assert!(!script(&ramdisk_view("rla_x"), mac(), &P).contains("warning"));
        // A machine that boots its disk does not need the ramdisk.
        assert!(script(&BootView::LocalDisk, mac(), &p).contains("sanboot"));
    }

    #[test]
    fn ramdisk_files_are_checked_where_racklift_serves_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut boot = crate::config::Config::defaults().boot;
        boot.ramdisk_dir = dir.path().join("ramdisk");
        boot.kernel_url = "http://10.0.0.1:8080/assets/ramdisk/vmlinuz".into();
        boot.initrd_url = "http://10.0.0.1:8080/assets/ramdisk/initrd.img".into();
        let url = "http://10.0.0.1:8080";
        let missing = ramdisk_missing(&boot, url).expect("no directory");
        assert!(
            missing
                .console
                .contains("vmlinuz is missing, initrd.img is missing")
                && !missing.console.contains(&*dir.path().to_string_lossy()),
            "{missing:?}"
        );
        let why = missing.detail;
        assert!(
            why.contains("vmlinuz is missing (boot.kernel_url)")
                && why.contains("initrd.img is missing (boot.initrd_url)")
                && why.contains("build-ramdisk.sh")
                && why.contains(&*boot.ramdisk_dir.to_string_lossy()),
            "{why}"
        );
        std::fs::create_dir(&boot.ramdisk_dir).unwrap();
        std::fs::write(boot.ramdisk_dir.join("vmlinuz"), b"k").unwrap();
        std::fs::write(boot.ramdisk_dir.join("initrd.img"), b"").unwrap();
        let why = ramdisk_missing(&boot, url).expect("empty initrd").detail;
        assert!(
            why.contains("initrd.img is empty") && !why.contains("vmlinuz"),
            "{why}"
        );
        std::fs::write(boot.ramdisk_dir.join("initrd.img"), b"i").unwrap();
        assert_eq!(ramdisk_missing(&boot, url), None);
        // Served from elsewhere: not racklift's to check.
        std::fs::remove_file(boot.ramdisk_dir.join("vmlinuz")).unwrap();
        boot.kernel_url = "http://mirror.example/vmlinuz".into();
        assert_eq!(ramdisk_missing(&boot, url), None);
    }
}
