//! The device memory requests may use: parsed sizes, the environment's override, the
//! driver's figure (Vulkan's largest device-local heap) or, on CPU adapters, the host's.

/// Environment variable: the device memory the engine may use (`6GiB`, `512MiB`, `8G`, or
/// bytes), for [`crate::Gpu::memory_budget`]; overrides what the driver reports.
pub const ENV_MEMORY_BUDGET: &str = "SD_WGPU_MEMORY_BUDGET";

/// How much device memory requests may need, and where that number came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    pub bytes: u64,
    /// Where the number came from, for messages: `SD_WGPU_MEMORY_BUDGET`, the driver's heap…
    pub source: String,
}

/// Parses a byte count: a number with an optional unit `B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`,
/// `G`/`GB`/`GiB`, `T`/`TB`/`TiB` (all binary: 1 GB = 1 GiB = 2^30 bytes), case-insensitive,
/// fractions allowed (`1.5GiB`).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    let bytes = value * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// `1.5 GiB`, `320.0 MiB`, `512 B`: for messages.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u32); 3] = [("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (name, shift) in UNITS {
        if bytes >= 1u64 << shift {
            return format!("{:.1} {name}", bytes as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{bytes} B")
}

pub(super) fn env_budget() -> Option<MemoryBudget> {
    let text = std::env::var(ENV_MEMORY_BUDGET).ok()?;
    match parse_bytes(&text) {
        Some(bytes) => Some(MemoryBudget {
            bytes,
            source: format!("{ENV_MEMORY_BUDGET}={text}"),
        }),
        None => {
            eprintln!(
                "warning: ignoring {ENV_MEMORY_BUDGET}={text:?} (expected bytes or a size like 6GiB)"
            );
            None
        }
    }
}

/// What the device may hold when nobody said: a CPU adapter's memory is the host's (lavapipe
/// reports a nominal 2 GiB heap it does not enforce), so the memory Linux has available;
/// else the driver's figure.
pub(super) fn default_budget(
    device: &wgpu::Device,
    info: &wgpu::AdapterInfo,
) -> Option<MemoryBudget> {
    if info.device_type == wgpu::DeviceType::Cpu {
        if let Some(bytes) = host_available_memory() {
            return Some(MemoryBudget {
                bytes,
                source: "host memory available (CPU adapter), /proc/meminfo".into(),
            });
        }
    }
    driver_budget(device)
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn host_available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The device's memory as the driver reports it: Vulkan's largest device-local heap. Other
/// backends report none through wgpu (the budget is then unknown unless set).
#[cfg(not(any(target_os = "macos", target_os = "ios", target_arch = "wasm32")))]
fn driver_budget(device: &wgpu::Device) -> Option<MemoryBudget> {
    // SAFETY: only reads the physical device's memory properties; nothing is created or
    // destroyed through the hal handles, which live as long as `device`.
    unsafe {
        let hal = device.as_hal::<wgpu::hal::api::Vulkan>()?;
        let instance = hal.shared_instance().raw_instance();
        let props = instance.get_physical_device_memory_properties(hal.raw_physical_device());
        let heaps = &props.memory_heaps[..(props.memory_heap_count as usize).min(16)];
        // VK_MEMORY_HEAP_DEVICE_LOCAL_BIT = 0x1.
        let (i, heap) = heaps
            .iter()
            .enumerate()
            .filter(|(_, h)| h.flags.as_raw() & 1 != 0)
            .max_by_key(|(_, h)| h.size)
            .or_else(|| heaps.iter().enumerate().max_by_key(|(_, h)| h.size))?;
        Some(MemoryBudget {
            bytes: heap.size,
            source: format!("Vulkan device-local heap {i}"),
        })
    }
}

#[cfg(any(target_os = "macos", target_os = "ios", target_arch = "wasm32"))]
fn driver_budget(_device: &wgpu::Device) -> Option<MemoryBudget> {
    None
}
