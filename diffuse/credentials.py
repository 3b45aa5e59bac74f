"""Content credentials (C2PA): a signed statement inside each PNG that a generative AI model made it.

Every image diffuse writes carries a C2PA manifest (c2pa-python, the Content Authenticity
Initiative's SDK) in a `caBX` chunk: a `c2pa.actions.v2` assertion whose action `c2pa.created`
names the IPTC digital source type of media made by a trained model, and our own
`org.diffuse.generation` assertion with the model's name, its weights' SHA-256 and the generation
parameters (the PNG's "diffuse" text, word for word). The claim and a hash of every other byte of
the file (the hard binding) are signed with an X.509 key, so changing a pixel or a text chunk
afterwards makes the signature fail. The PNG's other chunks, our parameters and A1111's, stay as
they were: readers that know nothing of C2PA read them as before.

What a valid signature proves depends on the key. Without one configured (DIFFUSE_C2PA_CERT and
DIFFUSE_C2PA_KEY, or explicit paths), diffuse makes its own once in the user's config folder: a
root certificate whose private key is thrown away at once, and one signing certificate under it.
Such a signature proves only that the file is unchanged since it was signed by whoever holds that
key. It does not prove who made the image, nor that what the manifest says is true: anyone can
make a key like it and sign anything. A certificate from a CA on the C2PA trust list ties the
signature to a named organization. Every image signed with one key can be linked to the others.

Nothing is fetched, ever: no timestamp authority (so the signing time is the local clock's and no
one vouches for it), no OCSP, no remote manifest.
"""

import datetime as dt
import io
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DiffuseError

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED = "trainedAlgorithmicMedia"                      # made by a trained model (text-to-image)
COMPOSITE_TRAINED = "compositeWithTrainedAlgorithmicMedia"  # an input image edited by one (img2img, inpaint)
COMPOSITE_SYNTHETIC = "compositeSynthetic"               # an input image with drawn noise, no model (explain noise)
COMPOSITE = "composite"                                  # several images, AI-made or not (copies of a folder)
GENERATION = "org.diffuse.generation"                    # our assertion: model, weights hash, parameters
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CERT_FILE, KEY_FILE = "cert.pem", "key.pem"              # in config_dir() / "c2pa"
WHAT_IT_PROVES = ("a valid signature shows that the file is unchanged since whoever holds the key signed it; it "
                  "says who made the image only if a trusted CA vouches for the key")
# c2pa's verdict on a signer no trust anchor here vouches for: a fact about trust, not integrity.
UNTRUSTED = "signingCredential.untrusted"
# Offline: no OCSP, no remote manifests, no host at all (signing gets no timestamp authority).
OFFLINE = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}, "core": {"allowed_network_hosts": []}}


def config_dir() -> Path:
    """$DIFFUSE_CONFIG when set, else $XDG_CONFIG_HOME/diffuse, else ~/.config/diffuse: what
    diffuse keeps that must not be thrown away like a cache (the signing key)."""
    if os.environ.get("DIFFUSE_CONFIG"):
        return Path(os.environ["DIFFUSE_CONFIG"])
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "diffuse"


def local_key_dir() -> Path:
    return config_dir() / "c2pa"


class Credentials:
    """A certificate chain (PEM, signing certificate first) and its private key, checked on
    creation, that sign PNGs. The c2pa signer is built once per process and reused."""

    def __init__(self, cert_pem: bytes, key_pem: bytes, where: str = "the certificate", key_where: str = "the key"):
        self.cert_pem, self.key_pem, self.where = cert_pem, key_pem, where  # where: what errors call them
        self.alg = signing_alg(load_key(key_pem, key_where), load_chain(cert_pem, where)[0], where, key_where)
        self._lock, self._context, self._pid = threading.Lock(), None, None
        self._probe()

    @classmethod
    def from_files(cls, cert: str | Path, key: str | Path, cert_what: str = "certificate",
                   key_what: str = "key") -> "Credentials":
        """Credentials from two PEM files; errors call them `cert_what` and `key_what`."""
        return cls(read_bytes(cert, cert_what), read_bytes(key, key_what), f"{cert_what} {str(cert)!r}",
                   f"{key_what} {str(key)!r}")

    def sign(self, data: bytes, params: dict | None = None, mime: str = "image/png") -> bytes:
        """The image with a C2PA manifest built from `params` (default: the PNG's own "diffuse"
        parameters) embedded; every other byte is kept."""
        if params is None:
            params = png_parameters(data)
        import c2pa
        with self._lock:  # one native context, shared by threads (the server's worker, tests)
            out = io.BytesIO()
            c2pa.Builder(manifest(params, mime), context=self._signing_context()).sign(mime, io.BytesIO(data), out)
        return out.getvalue()

    def _signing_context(self, verify: bool = False):
        """The c2pa context holding our signer, built once per process (a native handle does not
        survive fork). Checking each signature after signing triples the time (3.2 ms against 1.1
        ms for a 32x32 PNG): it is done once, on the probe image, since it can only fail for the
        certificate, which every signature shares."""
        import c2pa
        if verify or self._context is None or self._pid != os.getpid():
            signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(self.alg, self.cert_pem, self.key_pem, None))
            settings = {"version": 1, **OFFLINE, "builder": {"thumbnail": {"enabled": False}}}
            settings["verify"] = {**OFFLINE["verify"], "verify_after_sign": verify}
            context = c2pa.Context.from_dict(settings, signer=signer)
            if verify:
                return context
            self._context, self._pid = context, os.getpid()
        return self._context

    def _probe(self) -> None:
        """Sign a 1x1 PNG with verification on, so a certificate c2pa refuses is a one-line error
        before any image is made, not after."""
        import c2pa
        from PIL import Image
        buf = io.BytesIO()
        Image.new("RGB", (1, 1)).save(buf, format="PNG")
        try:
            c2pa.Builder(manifest({"model": "probe"}), context=self._signing_context(verify=True)).sign(
                "image/png", io.BytesIO(buf.getvalue()), io.BytesIO())
        except c2pa.C2paError as e:
            reason = str(e).strip().splitlines()[-1].strip()
            raise DiffuseError(f"{self.where}: c2pa refuses it ({reason}); it needs a signing certificate issued by a "
                               f"CA (not self-signed, not a CA itself) with the digitalSignature key usage and the "
                               f"emailProtection extended key usage, followed in the file by its issuer's certificate") from None


def load_credentials(cert: str | Path | None = None, key: str | Path | None = None) -> Credentials:
    """The credentials to sign with: the paths given, else $DIFFUSE_C2PA_CERT and
    $DIFFUSE_C2PA_KEY, else this user's local key (made on first use)."""
    if (cert is None) != (key is None):
        raise DiffuseError("give both a certificate and a key (--c2pa-cert and --c2pa-key), or neither")
    if cert is not None:
        return Credentials.from_files(cert, key)
    env_cert, env_key = os.environ.get("DIFFUSE_C2PA_CERT"), os.environ.get("DIFFUSE_C2PA_KEY")
    if env_cert or env_key:
        if not (env_cert and env_key):
            raise DiffuseError("set both DIFFUSE_C2PA_CERT and DIFFUSE_C2PA_KEY, or neither")
        return Credentials.from_files(env_cert, env_key, "DIFFUSE_C2PA_CERT", "DIFFUSE_C2PA_KEY")
    return local_credentials()


def local_credentials() -> Credentials:
    """This user's own key, made once in local_key_dir() and reused."""
    folder = local_key_dir()
    if not folder.exists():
        create_local_key(folder)
    if not (folder / CERT_FILE).is_file() or not (folder / KEY_FILE).is_file():
        raise DiffuseError(f"the local signing key {str(folder)!r} is incomplete: delete the folder to make a new one")
    return Credentials.from_files(folder / CERT_FILE, folder / KEY_FILE, "local signing certificate", "local signing key")


def create_local_key(folder: Path) -> None:
    """Write a new chain and key to `folder` all at once: built in a private temporary folder
    beside it and renamed into place, so no process ever reads half a key. When two processes race
    (torchrun ranks), the first rename wins and the other's key is dropped unused."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))  # mode 0700
    try:
        cert_pem, key_pem = make_local_chain()
        write_private(tmp / KEY_FILE, key_pem)
        (tmp / CERT_FILE).write_bytes(cert_pem)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():  # not a lost race: a real failure
                raise
    except OSError as e:
        raise DiffuseError(f"cannot write the local signing key to {str(folder)!r} ({e.strerror or e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_private(path: Path, data: bytes) -> None:
    """A file only its owner can read (0600 from its creation, whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)


def make_local_chain(years: int = 10) -> tuple[bytes, bytes]:
    """(certificate chain PEM, private key PEM) for a local signer, ES256 (P-256, the smallest
    and fastest algorithm c2pa takes). c2pa refuses a self-signed signing certificate, a CA one,
    and one without an extended key usage it knows (it accepts emailProtection; its own C2PA and
    documentSigning EKUs fail verification in c2pa-rs 0.91), so: a root CA that signs one
    end-entity certificate, and whose private key is then forgotten, so that nothing else can ever
    be issued under it. The chain file holds both, signing certificate first."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "diffuse local key, identity not verified")])

    def usage(sign: bool):
        return x509.KeyUsage(digital_signature=not sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=sign, crl_sign=sign,
                             encipher_only=False, decipher_only=False)

    now = dt.datetime.now(dt.timezone.utc)
    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def certificate(subject, issuer, public, signing_key, ca: bool):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=365 * years))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
                   .add_extension(usage(sign=ca), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False))
        if not ca:
            builder = (builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                       .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                                      critical=False))
        return builder.sign(signing_key, hashes.SHA256())

    root = certificate(name("diffuse local root"), name("diffuse local root"), root_key.public_key(), root_key, True)
    signer = certificate(name("diffuse local signer"), root.subject, key.public_key(), root_key, False)
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return signer.public_bytes(pem) + root.public_bytes(pem), key_pem


def read_bytes(path: str | Path, what: str = "") -> bytes:
    """A file's bytes; a missing or unreadable one is a one-line error naming it (as `what`, if given)."""
    name = f"{what} {str(path)!r}" if what else repr(str(path))
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DiffuseError(f"{name} does not exist") from None
    except OSError as e:
        raise DiffuseError(f"cannot read {name} ({e.strerror or e})") from None


def load_chain(cert_pem: bytes, where: str) -> list:
    from cryptography import x509
    try:
        return x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise DiffuseError(f"{where} holds no PEM certificate") from None


def load_key(key_pem: bytes, key_where: str):
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    try:
        return serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:  # cryptography's word for a key that needs a password
        raise DiffuseError(f"{key_where} is encrypted: give an unencrypted PEM key (file mode 0600)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise DiffuseError(f"{key_where} is not a PEM private key") from None


def signing_alg(key, cert, where: str, key_where: str):
    """The C2PA algorithm for a key that matches the chain's first certificate."""
    import c2pa
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise DiffuseError(f"{key_where} does not belong to {where} (its first certificate has another public key)")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": c2pa.C2paSigningAlg.ES256, "secp384r1": c2pa.C2paSigningAlg.ES384,
                "secp521r1": c2pa.C2paSigningAlg.ES512}
        if key.curve.name in algs:
            return algs[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return c2pa.C2paSigningAlg.PS256
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return c2pa.C2paSigningAlg.ED25519
    raise DiffuseError(f"{key_where} is of a kind C2PA cannot sign with: use EC P-256/384/521, RSA or Ed25519")


def png_parameters(png: bytes) -> dict:
    """The generation parameters a PNG records (its "diffuse" text), read without decoding pixels."""
    from PIL import Image
    if not png.startswith(PNG_SIGNATURE):
        raise DiffuseError("not a PNG: content credentials are written into PNG files only")
    try:
        text = Image.open(io.BytesIO(png)).info.get("diffuse")
    except (OSError, ValueError, SyntaxError):
        raise DiffuseError("not a readable PNG") from None
    if text is None:
        raise DiffuseError("the PNG records no diffuse parameters: content credentials state how an image was made, "
                           "and this one does not say")
    try:
        params = json.loads(text)
    except ValueError:
        params = None
    if not isinstance(params, dict):
        raise DiffuseError("the PNG's diffuse parameters are not a JSON object")
    return params


def tiles(params: dict) -> list[dict]:
    """The images a picture shows: a grid or explain picture lists them under "images"."""
    images = params.get("images")
    return [t for t in images if isinstance(t, dict)] if isinstance(images, list) else [params]


def digital_source_type(params: dict) -> str:
    """What IPTC calls how the picture was made: by a trained model alone, by one from an input
    image (the kept pixels may be a photograph), or from an input image with no model at all. A
    copies picture shows training images beside what it checks: generated ones, or files."""
    shown = tiles(params)
    if params.get("picture") == "explain copies":
        return COMPOSITE_TRAINED if any("model" in t for t in shown) else COMPOSITE
    if not any("model" in t for t in shown):
        return COMPOSITE_SYNTHETIC
    return TRAINED if all(t.get("mode", "txt2img") == "txt2img" for t in shown) else COMPOSITE_TRAINED


def manifest(params: dict, mime: str = "image/png") -> dict:
    """The manifest definition c2pa signs: who made it, how, and with what."""
    from . import __version__
    first = tiles(params)[0] if tiles(params) else {}
    model, sha256 = first.get("model"), first.get("model_sha256")
    source = digital_source_type(params)
    how = {TRAINED: "from a text prompt", COMPOSITE_TRAINED: "from an input image and a text prompt",
           COMPOSITE_SYNTHETIC: "an input image with drawn noise, by no model",
           COMPOSITE: "images from files beside their nearest training images"}[source]
    if params.get("picture") == "explain copies" and source == COMPOSITE_TRAINED:
        how = "from text prompts, beside their nearest training images"
    description = f"Made by diffuse's model {model!r} {how}" if model else f"Made by diffuse: {how}"
    action = {"action": "c2pa.created", "digitalSourceType": IPTC + source, "description": description,
              "softwareAgent": {"name": "diffuse", "version": __version__}}
    return {"claim_generator_info": [{"name": "diffuse", "version": __version__}], "format": mime,
            "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [action]}},
                           {"label": GENERATION, "data": {"model": model, "model_sha256": sha256, "parameters": params}}]}


@dataclass(frozen=True)
class Claim:
    """What an image's active C2PA manifest says, and whether its signature holds."""
    valid: bool                          # claim signature and hard binding check out: unchanged since signed
    trusted: bool = False                # the signer chains to one of the trust anchors given to read_claim
    generator: str | None = None         # the claim generator, e.g. "diffuse 0.1.0"
    digital_source_type: str | None = None  # IPTC's term (the URL's last part), e.g. trainedAlgorithmicMedia
    model: str | None = None             # from our assertion: the model's name
    model_sha256: str | None = None      # its weights' SHA-256
    parameters: dict | None = None       # the generation parameters it signed
    signer: str | None = None            # the signing certificate's common name and organization
    problems: list[str] = field(default_factory=list)  # what failed, in c2pa's words (an untrusted signer is not one)


def read_claim(data: bytes, anchors: bytes | None = None, mime: str = "image/png") -> Claim | None:
    """The active manifest's claim of an image's bytes, validated offline, or None when it has no
    manifest (or c2pa cannot read its format). `anchors` (PEM) are the root certificates a signer
    counts as trusted by; a manifest that cannot be parsed reads as invalid, with the reason."""
    import c2pa
    settings = {"version": 1, **OFFLINE}
    if anchors:
        settings["trust"] = {"user_anchors": anchors.decode()}
    try:
        store = json.loads(c2pa.Reader(mime, io.BytesIO(data), context=c2pa.Context.from_dict(settings)).json())
    except (c2pa.C2paError.ManifestNotFound, c2pa.C2paError.NotSupported):
        return None
    except c2pa.C2paError as e:
        return Claim(valid=False, problems=[" ".join(str(e).split())])
    active = store.get("manifests", {}).get(store.get("active_manifest"), {})
    results = store.get("validation_results", {}).get("activeManifest", {})
    state = store.get("validation_state")
    problems = [f"{f.get('code')}: {f.get('explanation')}" for f in results.get("failure", []) if f.get("code") != UNTRUSTED]
    assertions = {a.get("label"): a.get("data", {}) for a in active.get("assertions", [])}
    ours = assertions.get(GENERATION, {})
    return Claim(valid=state in ("Valid", "Trusted") and not problems, trusted=state == "Trusted",
                 generator=generator_name(active), digital_source_type=source_of(assertions),
                 model=ours.get("model"), model_sha256=ours.get("model_sha256"), parameters=ours.get("parameters"),
                 signer=signer_name(active.get("signature_info", {})), problems=problems)


def generator_name(manifest: dict) -> str | None:
    info = manifest.get("claim_generator_info") or []
    if info and isinstance(info[0], dict):
        return " ".join(str(info[0][k]) for k in ("name", "version") if info[0].get(k))
    return manifest.get("claim_generator")


def source_of(assertions: dict) -> str | None:
    """The digital source type of the first action that names one (c2pa.actions or .v2)."""
    for label in ("c2pa.actions.v2", "c2pa.actions"):
        for action in assertions.get(label, {}).get("actions", []):
            if action.get("digitalSourceType"):
                return action["digitalSourceType"].rsplit("/", 1)[-1]
    return None


def signer_name(signature: dict) -> str | None:
    parts = [signature.get("common_name"), signature.get("issuer")]
    return ", ".join(p for p in parts if p) or None


def local_anchor() -> bytes | None:
    """The root certificate of this user's local key, if one was made (none is made here): the
    anchor that tells "signed on this computer's key" from any other signer."""
    path = local_key_dir() / CERT_FILE
    try:
        chain = load_chain(path.read_bytes(), str(path))
    except (OSError, DiffuseError):
        return None
    from cryptography.hazmat.primitives import serialization
    return chain[-1].public_bytes(serialization.Encoding.PEM)
