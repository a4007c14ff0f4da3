//! ONNX Runtime through the `ort` crate, loaded dynamically from the
//! library that the pip package `onnxruntime` ships.

use crate::{ExecError, Runtime, Session};
use ort::memory::Allocator;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynTensor, TensorElementType, ValueType};
use splitup_tensor::{DType, Tensor};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The pip package whose library matches the `ort` crate's API level (31).
pub const ORT_PIP_SPEC: &str = "onnxruntime==1.31.1";

/// Finds `libonnxruntime.so`: `ORT_DYLIB_PATH`, then the `onnxruntime/capi`
/// folder of every Python site-packages a pip install may have used, then
/// the location Python itself reports.
pub fn find_onnxruntime() -> Result<PathBuf, ExecError> {
    let mut searched: Vec<String> = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        // An explicit setting that points nowhere is a mistake to report,
        // not a hint to ignore.
        return Err(ExecError::LibraryMissing {
            searched: format!("ORT_DYLIB_PATH={} is not a file", p.display()),
        });
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        roots.push(PathBuf::from(v).join("lib"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let home = PathBuf::from(home);
        roots.push(home.join(".local/lib"));
        if let Ok(rd) = std::fs::read_dir(home.join(".pyenv/versions")) {
            roots.extend(rd.flatten().map(|e| e.path().join("lib")));
        }
    }
    roots.extend(["/usr/local/lib", "/usr/lib", "/opt/conda/lib"].map(PathBuf::from));
    for root in &roots {
        let Ok(rd) = std::fs::read_dir(root) else { continue };
        let mut pys: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("python3"))
            })
            .collect();
        pys.sort();
        for py in pys {
            for sp in ["site-packages", "dist-packages"] {
                if let Some(lib) = lib_in(&py.join(sp).join("onnxruntime/capi")) {
                    return Ok(lib);
                }
            }
        }
    }
    searched.push("site-packages under ~/.local, ~/.pyenv, /usr/local, /usr, $VIRTUAL_ENV".into());
    if let Ok(out) = std::process::Command::new("python3")
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !dir.is_empty() {
            if let Some(lib) = lib_in(&Path::new(&dir).join("capi")) {
                return Ok(lib);
            }
        }
        searched.push("python3's onnxruntime package".into());
    }
    Err(ExecError::LibraryMissing {
        searched: searched.join("; "),
    })
}

fn lib_in(dir: &Path) -> Option<PathBuf> {
    let rd = std::fs::read_dir(dir).ok()?;
    let mut libs: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so"))
        })
        .collect();
    libs.sort();
    // Prefer the fully versioned file name (the real file, not a link).
    libs.pop()
}

static ENV: OnceLock<Result<(ort::environment::Environment, PathBuf), String>> = OnceLock::new();

/// ONNX Runtime's graph optimisation levels. Nodes may run a task at any of
/// them; they reorder and fuse arithmetic, so results differ in the last bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptLevel {
    /// No graph optimisation.
    Disabled,
    /// Constant folding, redundant node elimination, simple fusions.
    Basic,
    /// Also the complex fusions (GELU, attention, layer norm, ...).
    Extended,
    /// Also layout optimisations (ONNX Runtime's `ORT_ENABLE_LAYOUT`); what
    /// [`OrtRuntime::new`] uses.
    Layout,
    /// Everything (`ORT_ENABLE_ALL`).
    All,
}

impl OptLevel {
    pub const ALL: [OptLevel; 5] = [
        OptLevel::Disabled,
        OptLevel::Basic,
        OptLevel::Extended,
        OptLevel::Layout,
        OptLevel::All,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OptLevel::Disabled => "disabled",
            OptLevel::Basic => "basic",
            OptLevel::Extended => "extended",
            OptLevel::Layout => "layout",
            OptLevel::All => "all",
        }
    }

    fn ort(self) -> GraphOptimizationLevel {
        match self {
            OptLevel::Disabled => GraphOptimizationLevel::Disable,
            OptLevel::Basic => GraphOptimizationLevel::Level1,
            OptLevel::Extended => GraphOptimizationLevel::Level2,
            OptLevel::Layout => GraphOptimizationLevel::Level3,
            OptLevel::All => GraphOptimizationLevel::All,
        }
    }
}

pub struct OrtRuntime {
    intra_threads: usize,
    level: OptLevel,
}

impl OrtRuntime {
    /// Loads ONNX Runtime once per process. `intra_threads` is the thread
    /// count of each session (0: ONNX Runtime's default). Sessions are
    /// optimised at [`OptLevel::Layout`].
    pub fn new(intra_threads: usize) -> Result<OrtRuntime, ExecError> {
        OrtRuntime::with_level(intra_threads, OptLevel::Layout)
    }

    /// As [`OrtRuntime::new`], with sessions optimised at `level`.
    pub fn with_level(intra_threads: usize, level: OptLevel) -> Result<OrtRuntime, ExecError> {
        let r = ENV.get_or_init(|| {
            let path = find_onnxruntime().map_err(|e| e.to_string())?;
            let env = ort::init_from(&path)
                .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}\nInstall the matching version with:\n    pip install {ORT_PIP_SPEC}", path.display()))?
                .with_name("splitup")
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))?;
            Ok((env, path))
        });
        match r {
            Ok(_) => Ok(OrtRuntime { intra_threads, level }),
            Err(e) => Err(ExecError::Runtime(e.clone())),
        }
    }

    pub fn library_path() -> Option<PathBuf> {
        ENV.get().and_then(|r| r.as_ref().ok()).map(|(_, p)| p.clone())
    }
}

fn rt_err(e: impl std::fmt::Display) -> ExecError {
    ExecError::Runtime(e.to_string())
}

fn element_type(d: DType) -> TensorElementType {
    match d {
        DType::F32 => TensorElementType::Float32,
        DType::F64 => TensorElementType::Float64,
        DType::F16 => TensorElementType::Float16,
        DType::Bf16 => TensorElementType::Bfloat16,
        DType::I8 => TensorElementType::Int8,
        DType::I16 => TensorElementType::Int16,
        DType::I32 => TensorElementType::Int32,
        DType::I64 => TensorElementType::Int64,
        DType::U8 => TensorElementType::Uint8,
        DType::U16 => TensorElementType::Uint16,
        DType::U32 => TensorElementType::Uint32,
        DType::U64 => TensorElementType::Uint64,
        DType::Bool => TensorElementType::Bool,
    }
}

fn dtype_of(t: TensorElementType) -> Option<DType> {
    DType::ALL.into_iter().find(|&d| element_type(d) == t)
}

impl Runtime for OrtRuntime {
    fn name(&self) -> String {
        "onnxruntime-cpu".into()
    }

    fn load(&self, onnx: &[u8]) -> Result<Box<dyn Session>, ExecError> {
        let (env, _) = ENV
            .get()
            .and_then(|r| r.as_ref().ok())
            .ok_or_else(|| rt_err("ONNX Runtime is not initialised"))?;
        let mut b = ort::session::Session::builder(env).map_err(rt_err)?;
        b = b.with_optimization_level(self.level.ort()).map_err(rt_err)?;
        if self.intra_threads > 0 {
            b = b.with_intra_threads(self.intra_threads).map_err(rt_err)?;
        }
        let session = b.commit_from_memory(onnx).map_err(rt_err)?;
        let outputs = session.outputs().iter().map(|o| o.name().to_string()).collect();
        Ok(Box::new(OrtSession { session, outputs }))
    }
}

struct OrtSession {
    session: ort::session::Session,
    outputs: Vec<String>,
}

impl Session for OrtSession {
    fn run(&mut self, inputs: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>, ExecError> {
        let alloc = Allocator::default();
        let mut values: Vec<(String, ort::session::SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for (name, t) in inputs {
            let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
            let mut v = DynTensor::new(&alloc, element_type(t.dtype), shape).map_err(|e| ExecError::Input {
                name: name.to_string(),
                msg: e.to_string(),
            })?;
            let bytes = t.bytes();
            if !bytes.is_empty() {
                // SAFETY: the tensor was just allocated on the CPU with exactly
                // this shape and element type, so it holds `bytes.len()` bytes.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.data_ptr_mut() as *mut u8, bytes.len()) };
            }
            values.push((name.to_string(), v.into()));
        }
        let mut out = self.session.run(values).map_err(rt_err)?;
        let mut result = Vec::with_capacity(self.outputs.len());
        for name in &self.outputs {
            let v = out.remove(name.as_str()).ok_or_else(|| ExecError::Output {
                name: name.clone(),
                msg: "missing from the results".into(),
            })?;
            let (ty, shape) = match v.dtype() {
                ValueType::Tensor { ty, shape, .. } => (*ty, shape.iter().map(|&d| d as usize).collect::<Vec<usize>>()),
                other => {
                    return Err(ExecError::Output {
                        name: name.clone(),
                        msg: format!("is not a tensor ({other:?})"),
                    })
                }
            };
            let dtype = dtype_of(ty).ok_or_else(|| ExecError::Output {
                name: name.clone(),
                msg: format!("has unsupported element type {ty:?}"),
            })?;
            let v = v
                .downcast::<ort::value::DynTensorValueType>()
                .map_err(|e| ExecError::Output {
                    name: name.clone(),
                    msg: e.to_string(),
                })?;
            let len = shape.iter().product::<usize>() * dtype.size();
            let mut bytes = vec![0u8; len];
            if len > 0 {
                // SAFETY: a CPU tensor of this shape and type holds `len` bytes.
                unsafe { std::ptr::copy_nonoverlapping(v.data_ptr() as *const u8, bytes.as_mut_ptr(), len) };
            }
            result.push((
                name.clone(),
                Tensor::new(dtype, shape, bytes).map_err(|e| ExecError::Output {
                    name: name.clone(),
                    msg: e.to_string(),
                })?,
            ));
        }
        Ok(result)
    }
}
