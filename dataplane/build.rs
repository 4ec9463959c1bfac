//! With the `dpdk` feature: binds DPDK 22.11 with bindgen (a narrow allowlist), compiles
//! the C shim for its inline fast path, and links the DPDK libraries dynamically (EAL then
//! loads every PMD itself). Without the feature nothing happens, so the workspace builds on
//! machines without DPDK.

fn main() {
    #[cfg(feature = "dpdk")]
    dpdk::build();
}

#[cfg(feature = "dpdk")]
mod dpdk {
    use std::path::PathBuf;
    use std::process::Command;

    fn pkg_config(arg: &str) -> Vec<String> {
        let output = Command::new("pkg-config")
            .args([arg, "libdpdk"])
            .output()
            .unwrap_or_else(|e| panic!("the dpdk feature needs pkg-config: {e}"));
        if !output.status.success() {
            panic!(
                "pkg-config cannot find libdpdk: install DPDK 22.11 \
                 (apt-get install libdpdk-dev pkg-config clang libclang-dev) or build without \
                 the dpdk feature. pkg-config said: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // Read the flags ourselves: the pkg-config crate drops `-include rte_config.h` and
        // `-march=…`, without which the headers do not describe the installed libraries.
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    pub fn build() {
        println!("cargo:rerun-if-changed=src/dpdk/shim.c");
        println!("cargo:rerun-if-changed=src/dpdk/shim.h");
        let cflags = pkg_config("--cflags");

        let mut shim = cc::Build::new();
        shim.file("src/dpdk/shim.c").warnings(false);
        for flag in &cflags {
            shim.flag(flag);
        }
        shim.compile("netmigrate_dpdk_shim");

        for lib in [
            "rte_ethdev",
            "rte_mbuf",
            "rte_mempool",
            "rte_ring",
            "rte_eal",
            "rte_kvargs",
        ] {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
        for flag in pkg_config("--libs") {
            if let Some(dir) = flag.strip_prefix("-L") {
                println!("cargo:rustc-link-search=native={dir}");
            }
        }

        let bindings = bindgen::Builder::default()
            .header("src/dpdk/shim.h")
            .clang_args(&cflags)
            .allowlist_function(
                "nm_.*|rte_eal_init|rte_eal_cleanup|rte_pktmbuf_pool_create|rte_mempool_free|\
                 rte_eth_dev_count_avail|rte_eth_dev_is_valid_port|rte_eth_dev_configure|\
                 rte_eth_rx_queue_setup|rte_eth_tx_queue_setup|rte_eth_dev_start|\
                 rte_eth_dev_stop|rte_eth_dev_close|rte_eth_dev_info_get|rte_eth_macaddr_get|\
                 rte_eth_stats_get|rte_eth_promiscuous_enable|rte_eth_dev_get_name_by_port|\
                 rte_eth_dev_socket_id|rte_socket_id|rte_strerror|rte_thread_register|\
                 rte_thread_unregister|rte_eal_get_runtime_dir",
            )
            .allowlist_type("rte_eth_conf|rte_eth_dev_info|rte_eth_stats|rte_ether_addr")
            .allowlist_var("RTE_ETH_MQ_RX_RSS|RTE_ETH_RSS_UDP|RTE_ETH_RSS_IP|RTE_MBUF_DEFAULT_BUF_SIZE|RTE_MAX_ETHPORTS")
            .opaque_type("rte_mbuf|rte_mempool")
            .derive_default(true)
            .layout_tests(false)
            .generate_comments(false)
            .generate()
            .expect("bindgen could not bind the DPDK headers");
        let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
        bindings
            .write_to_file(out.join("dpdk_bindings.rs"))
            .expect("write bindings");
    }
}
