"""Content credentials: what is signed reads back, a changed byte reads invalid, the key is made
once and kept private, a configured key is used, and every bad key is a one-line error."""

import io
import os
import stat
import struct
import zlib

import pytest
from PIL import Image

from conftest import MADE_PARAMS as PARAMS, made_image as generated_image
from diffuse.credentials import (COMPOSITE_SYNTHETIC, COMPOSITE_TRAINED, TRAINED, Credentials, create_local_key,
                                 digital_source_type, load_credentials, local_anchor, local_key_dir, make_local_chain,
                                 read_claim)
from diffuse.errors import DiffuseError
from diffuse.export import Exporter, save_png


def chunks(png: bytes):
    """(type, start, length) of each PNG chunk."""
    i = 8
    while i < len(png):
        n, = struct.unpack(">I", png[i:i + 4])
        yield png[i + 4:i + 8], i, n
        i += 12 + n


def rewrite_chunk(png: bytes, kind: bytes, change) -> bytes:
    """The PNG with the first `kind` chunk's data replaced by change(data), its CRC made right:
    a careful forger's edit, which only the signature can catch."""
    for t, i, n in chunks(png):
        if t == kind:
            data = change(png[i + 8:i + 8 + n])
            return png[:i] + struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data)) + png[i + 12 + n:]
    raise AssertionError(f"no {kind} chunk")


def test_sign_and_read_round_trip_keeps_pixels_and_text():
    img = generated_image()
    signed = Exporter(load_credentials()).png(img)
    claim = read_claim(signed)
    assert claim.valid and not claim.problems and not claim.trusted  # no anchor given: nobody vouches for the key
    assert claim.digital_source_type == TRAINED and claim.model == "shapes" and claim.model_sha256 == "ab" * 32
    assert claim.parameters == PARAMS and claim.generator.startswith("diffuse ")
    assert claim.signer.startswith("diffuse local signer")
    assert read_claim(signed, anchors=local_anchor()).trusted  # chains to this computer's own root
    back = Image.open(io.BytesIO(signed))
    assert back.text == {k: img.info[k] for k in ("diffuse", "parameters")}  # the other chunks survive signing
    assert back.convert("RGB").tobytes() == img.tobytes()
    assert [t for t, _, _ in chunks(signed)].count(b"caBX") == 1  # the manifest is one chunk beside them


def test_a_changed_pixel_or_text_chunk_reads_invalid():
    signed = Exporter(load_credentials()).png(generated_image())

    def flip_pixel(idat):
        raw = bytearray(zlib.decompress(idat))
        raw[5] ^= 1  # one bit of one pixel (byte 0 of each row is its filter type)
        return zlib.compress(bytes(raw))

    pixel = rewrite_chunk(signed, b"IDAT", flip_pixel)
    assert Image.open(io.BytesIO(pixel)).convert("RGB").tobytes() != generated_image().tobytes()
    text = rewrite_chunk(signed, b"tEXt", lambda d: d.replace(b"red", b"blu"))
    for changed in (pixel, text):
        claim = read_claim(changed)
        assert not claim.valid and any("dataHash.mismatch" in p for p in claim.problems), claim
    resaved = io.BytesIO()
    Image.open(io.BytesIO(signed)).save(resaved, format="PNG")  # re-encoding drops the manifest: nothing to claim
    assert read_claim(resaved.getvalue()) is None
    assert read_claim(Exporter().png(generated_image())) is None


def test_a_damaged_manifest_reads_invalid_not_a_traceback():
    signed = Exporter(load_credentials()).png(generated_image())
    damaged = rewrite_chunk(signed, b"caBX", lambda d: d[:1500] + bytes([d[1500] ^ 0xFF]) + d[1501:])
    claim = read_claim(damaged)
    assert claim is not None and not claim.valid and claim.problems


def test_the_local_key_is_made_once_private_and_reused(config_dir):
    first = load_credentials()
    folder = local_key_dir()
    assert folder.parent == config_dir
    assert stat.S_IMODE(os.stat(folder / "key.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    again = load_credentials()
    assert again.cert_pem == first.cert_pem and again.key_pem == first.key_pem
    create_local_key(folder)  # a process that lost the race: the key in place stays
    assert load_credentials().key_pem == first.key_pem
    assert sorted(p.name for p in config_dir.iterdir()) == ["c2pa"]  # no temporary folder left behind


def test_the_key_goes_where_the_config_folder_is(tmp_path, monkeypatch):
    monkeypatch.delenv("DIFFUSE_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    load_credentials()
    assert (tmp_path / "xdg" / "diffuse" / "c2pa" / "key.pem").is_file()


def write_chain(folder):
    folder.mkdir()
    cert, key = make_local_chain()
    (folder / "cert.pem").write_bytes(cert)
    (folder / "key.pem").write_bytes(key)
    return folder / "cert.pem", folder / "key.pem"


def test_a_key_from_the_environment_or_arguments_is_used(tmp_path, monkeypatch, config_dir):
    cert, key = write_chain(tmp_path / "mine")
    monkeypatch.setenv("DIFFUSE_C2PA_CERT", str(cert))
    monkeypatch.setenv("DIFFUSE_C2PA_KEY", str(key))
    creds = load_credentials()
    assert creds.cert_pem == cert.read_bytes() and creds.key_pem == key.read_bytes()
    signed = Exporter(creds).png(generated_image())
    claim = read_claim(signed, anchors=local_anchor())
    assert claim.valid and not claim.trusted  # another key than this computer's own
    other_cert, other_key = write_chain(tmp_path / "other")
    assert load_credentials(other_cert, other_key).cert_pem == other_cert.read_bytes()  # arguments come first
    assert not (config_dir / "c2pa").exists() or (config_dir / "c2pa" / "cert.pem").read_bytes() != cert.read_bytes()


def test_edits_and_pictures_name_their_own_source_type():
    assert digital_source_type(PARAMS) == TRAINED
    assert digital_source_type({**PARAMS, "mode": "inpaint"}) == COMPOSITE_TRAINED  # kept pixels may be a photo
    assert digital_source_type({"picture": "grid", "images": [PARAMS, PARAMS]}) == TRAINED
    assert digital_source_type({"picture": "grid", "images": [PARAMS, {**PARAMS, "mode": "img2img"}]}) == COMPOSITE_TRAINED
    assert digital_source_type({"picture": "explain noise", "seed": 0}) == COMPOSITE_SYNTHETIC  # no model drew it


def test_save_png_signs_and_the_exporter_signs_a_gif(tmp_path):
    creds = load_credentials()
    path = save_png(generated_image(), tmp_path / "a.png", creds)
    assert read_claim(path.read_bytes()).valid
    assert read_claim(save_png(generated_image(), tmp_path / "b.png").read_bytes()) is None
    gif = Exporter(creds).gif([generated_image(), Image.new("RGB", (32, 32))], tmp_path / "c.gif", PARAMS)
    claim = read_claim(gif.read_bytes(), mime="image/gif")
    assert claim.valid and claim.parameters == PARAMS


def self_signed(tmp_path):
    """A certificate that signs itself, with every usage c2pa asks for: c2pa still refuses it."""
    import datetime as dt
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "me")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=9))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "self.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "self.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return tmp_path / "self.pem", tmp_path / "self.key"


def one_line_error(call) -> str:
    with pytest.raises(DiffuseError) as e:
        call()
    assert "\n" not in str(e.value), str(e.value)
    return str(e.value)


def test_bad_keys_and_images_are_one_line_errors(tmp_path, monkeypatch):
    cert, key = write_chain(tmp_path / "good")
    other_cert, other_key = write_chain(tmp_path / "other")
    (tmp_path / "junk.pem").write_bytes(b"not a PEM file")
    from cryptography.hazmat.primitives import serialization
    locked = tmp_path / "locked.pem"
    locked.write_bytes(serialization.load_pem_private_key(key.read_bytes(), None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    assert "does not exist" in one_line_error(lambda: load_credentials(tmp_path / "none.pem", key))
    assert "holds no PEM certificate" in one_line_error(lambda: load_credentials(tmp_path / "junk.pem", key))
    assert "not a PEM private key" in one_line_error(lambda: load_credentials(cert, tmp_path / "junk.pem"))
    assert "is encrypted" in one_line_error(lambda: load_credentials(cert, locked))
    assert "does not belong" in one_line_error(lambda: load_credentials(cert, other_key))
    assert "give both" in one_line_error(lambda: load_credentials(cert, None))
    assert "c2pa refuses it" in one_line_error(lambda: load_credentials(*self_signed(tmp_path)))
    monkeypatch.setenv("DIFFUSE_C2PA_CERT", str(cert))
    assert "set both" in one_line_error(load_credentials)
    creds = Credentials(cert.read_bytes(), key.read_bytes())
    assert "not a PNG" in one_line_error(lambda: creds.sign(b"GIF89a and more"))
    plain = io.BytesIO()
    Image.new("RGB", (4, 4)).save(plain, format="PNG")
    assert "records no diffuse parameters" in one_line_error(lambda: creds.sign(plain.getvalue()))
