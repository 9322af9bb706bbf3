"""Content Credentials (C2PA) read with the Content Authenticity Initiative's ``c2pa-python``, offline and
bounded, and what its report says mapped to a few fields: the active manifest's claim generator, signer,
signing time and actions, the IPTC digital source types declared anywhere in the store, the ingredients, and
the validation result as one of :data:`VALIDATION_STATES`.

:func:`read_credentials` is called by :func:`deepfake_edge.provenance.read_provenance` once the pre-scan
(deepfake_edge/provenance_input.py) found a manifest store, or a hint of one. ``c2pa`` is imported only
then (:func:`warm_up` imports it ahead of the first request). The read runs in a worker thread abandoned
after its time limit; at most :data:`MAX_CONCURRENT_READS` run at once, abandoned ones included.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Optional

from deepfake_edge.provenance_input import Scan, SourceBytes, clean_text

# What ``validation`` says, from best to worst. "valid" needs a configured trust list that holds the signer.
VALIDATION_STATES = ("valid", "untrusted signer", "invalid timestamp", "malformed", "ingredient invalid",
                     "expired certificate", "revoked certificate", "invalid certificate", "invalid signature",
                     "tampered")
TRUST_ANCHORS_ENV = "DEEPFAKE_EDGE_C2PA_TRUST_ANCHORS"

MAX_CONCURRENT_READS = 1  # c2pa reads running at once, abandoned ones included: at most one core is theirs
MAX_JSON_CHARS = 16 << 20  # c2pa's JSON report of the store; larger is refused unparsed
MAX_ACTIONS = 16  # distinct action names reported
MAX_INGREDIENTS = 8  # ingredient titles reported (ingredient_count has them all)
MAX_CODES = 8  # failure codes reported
MAX_MANIFESTS_WALKED = 256  # manifests searched for AI digital source types
MAX_NODES_WALKED = 20_000  # JSON nodes visited in that search

# IPTC digital source types that say generative AI made the content or part of it.
AI_SOURCE_TYPES = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia",
                             "algorithmicMedia", "compositeSynthetic"})

# c2pa validation codes (C2PA 2.x, "validation_status" and "validation_results" of c2pa's report) -> the
# state reported in ``validation``; the worst state among a manifest's failure codes wins.
#   assertion.dataHash.mismatch, assertion.boxesHash.mismatch, assertion.bmffHash.mismatch,
#   assertion.collectionHash.mismatch, assertion.hashedURI.mismatch, any other assertion.*.mismatch,
#   assertion.cloud-data.hardBinding ........................................... "tampered"
#   claimSignature.mismatch, claimSignature.missing, claimSignature.malformed .... "invalid signature"
#   signingCredential.invalid, signingCredential.algorithm*, algorithm.unsupported, "invalid certificate"
#   signingCredential.revoked, signingCredential.ocsp.revoked ...................... "revoked certificate"
#   signingCredential.expired, claimSignature.outsideValidity ...................... "expired certificate"
#   ingredient.* (an ingredient's manifest or signature no longer matches) ......... "ingredient invalid"
#   timeStamp.* failures (mismatch, malformed, outsideValidity) .................... "invalid timestamp"
#   claim.*, manifest.*, assertion.* others (missing, malformed, undeclared, action.*, json/cbor invalid),
#   general.error, and any code not listed here ..................................... "malformed"
#   signingCredential.untrusted, timeStamp.untrusted (with no trust list: always) .. "untrusted signer"
# With no failure codes at all the signer is on the configured trust list: "valid".
# Success and informational codes (claimSignature.validated, signingCredential.ocsp.skipped, ...) are not
# failures and are ignored.
_CODE_STATES = {
    "claimSignature.mismatch": "invalid signature",
    "claimSignature.missing": "invalid signature",
    "claimSignature.malformed": "invalid signature",
    "claimSignature.outsideValidity": "expired certificate",
    "signingCredential.invalid": "invalid certificate",
    "signingCredential.revoked": "revoked certificate",
    "signingCredential.ocsp.revoked": "revoked certificate",
    "signingCredential.expired": "expired certificate",
    "signingCredential.untrusted": "untrusted signer",
    "timeStamp.untrusted": "untrusted signer",
    "algorithm.unsupported": "invalid certificate",
    "assertion.cloud-data.hardBinding": "tampered",
}
_UNTRUSTED_CODES = frozenset({"signingCredential.untrusted", "timeStamp.untrusted"})


def _state_of(code: str) -> str:
    if code in _CODE_STATES:
        return _CODE_STATES[code]
    if code.startswith("assertion.") and code.endswith(".mismatch"):
        return "tampered"
    if code.startswith("signingCredential.algorithm"):
        return "invalid certificate"
    if code.startswith("ingredient."):
        return "ingredient invalid"
    if code.startswith("timeStamp."):
        return "invalid timestamp"
    return "malformed"


def _worst(states) -> Optional[str]:
    states = [state for state in states if state]
    return max(states, key=VALIDATION_STATES.index) if states else None

# -- the c2pa read ---------------------------------------------------------------------------------------
_contexts: dict = {}
_contexts_lock = threading.Lock()
_read_slots = threading.BoundedSemaphore(MAX_CONCURRENT_READS)


def _trust_anchors(trust_anchors) -> Optional[str]:
    value = trust_anchors if trust_anchors is not None else os.environ.get(TRUST_ANCHORS_ENV) or None
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii")
    if isinstance(value, os.PathLike) or (isinstance(value, str) and "-----BEGIN" not in value):
        value = Path(value).read_text("ascii")
    return value


def _context(anchors: Optional[str]):
    """A c2pa Context for offline reading (nothing fetched), with ``anchors`` as the trust list; one per
    process and trust list."""
    import c2pa

    key = (os.getpid(), anchors)
    with _contexts_lock:
        context = _contexts.get(key)
        if context is None:
            settings = {
                "verify": {"verify_after_reading": True, "verify_trust": True, "remote_manifest_fetch": False,
                           "ocsp_fetch": False},
                "core": {"allowed_network_hosts": []},
            }
            if anchors:
                settings["trust"] = {"trust_anchors": anchors}
            context = _contexts[key] = c2pa.Context.from_dict(settings)
        return context


def warm_up(trust_anchors=None) -> None:
    """Import the c2pa library and build its reading context now (~0.2 s), not on the first signed file."""
    _context(_trust_anchors(trust_anchors))


def _read_store(source: SourceBytes, mime: Optional[str], anchors: Optional[str]) -> Optional[str]:
    """c2pa's JSON report of the manifest store; None when c2pa finds none. Raises c2pa's errors."""
    import c2pa

    context = _context(anchors)
    with source.c2pa_stream() as stream:
        reader = c2pa.Reader.try_create(mime, stream, None, context)
        if reader is None:
            return None
        with reader:
            return reader.json()


def _bounded(function, time_limit_s: Optional[float]):
    """``function()`` in a worker thread, abandoned (left to finish on its own) after ``time_limit_s``."""
    if time_limit_s is None:
        return function()
    deadline = time.monotonic() + time_limit_s
    if not _read_slots.acquire(timeout=time_limit_s):
        raise TimeoutError("other Content Credentials checks are still running")
    outcome: dict = {}
    done = threading.Event()

    def work():
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = error
        finally:
            _read_slots.release()
            done.set()

    try:
        threading.Thread(target=work, name="provenance-read", daemon=True).start()
    except BaseException:
        _read_slots.release()
        raise
    if not done.wait(max(0.0, deadline - time.monotonic())):
        raise TimeoutError(f"checking them took longer than {time_limit_s:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _error_message(error: BaseException) -> str:
    message = clean_text(getattr(error, "message", None) or str(error), 160) or type(error).__name__
    return message


# -- the report ------------------------------------------------------------------------------------------
def _generator(manifest: dict) -> Optional[str]:
    infos = manifest.get("claim_generator_info")
    if isinstance(infos, list) and infos and isinstance(infos[0], dict) and infos[0].get("name"):
        info = infos[0]
        version = info.get("version")
        return clean_text(f"{info['name']} {version}" if isinstance(version, str) and version else info["name"])
    generator = manifest.get("claim_generator")
    if isinstance(generator, str) and generator.strip():
        # v1 claims: "Adobe_Photoshop/25.0 adobe_c2pa/0.7.6 c2pa-rs/0.25.2": the first product is the tool
        return clean_text(generator.split()[0].replace("_", " ").replace("/", " "))
    return None


def _source_types(node: Any, found: dict, budget: list) -> None:
    """Collect IPTC digital source types anywhere under ``node`` (``budget`` caps the nodes visited)."""
    stack = [node]
    while stack and budget[0] > 0:
        item = stack.pop()
        budget[0] -= 1
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(value, str) and key.rsplit(":", 1)[-1].lower() == "digitalsourcetype":
                    name = value.rsplit("/", 1)[-1].strip()
                    if name:
                        found.setdefault(clean_text(name, 60), None)
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _failure_codes(report: dict, ingredients: list[dict]) -> list[str]:
    """Failure codes of the active manifest, then its ingredients' (prefixed "ingredient.")."""
    results = report.get("validation_results")
    if not isinstance(results, dict):  # older reports: the flat list
        entries = report.get("validation_status") or []
        return list(dict.fromkeys(entry["code"] for entry in entries if isinstance(entry, dict)
                                  and isinstance(entry.get("code"), str)))
    active = results.get("activeManifest") if isinstance(results.get("activeManifest"), dict) else {}
    codes = [entry.get("code") for entry in active.get("failure") or [] if isinstance(entry, dict)]
    failures = []
    for delta in results.get("ingredientDeltas") or []:  # what c2pa found wrong with ingredients now
        deltas = delta.get("validationDeltas") if isinstance(delta, dict) else None
        failures += (deltas.get("failure") or []) if isinstance(deltas, dict) else []
    for ingredient in ingredients[:MAX_MANIFESTS_WALKED]:  # what was wrong with them when they were added
        recorded = ingredient.get("validation_results")
        recorded = recorded.get("activeManifest") if isinstance(recorded, dict) else None
        failures += (recorded.get("failure") or []) if isinstance(recorded, dict) else []
        failures += [entry for entry in ingredient.get("validation_status") or []  # v1 ingredients
                     if isinstance(entry, dict) and not str(entry.get("code", "")).endswith((".match", ".validated"))]
    for entry in failures:
        code = entry.get("code") if isinstance(entry, dict) else None
        if isinstance(code, str) and code not in _UNTRUSTED_CODES:
            codes.append(code if code.startswith("ingredient.") else "ingredient." + code)
    return [code for code in dict.fromkeys(codes) if isinstance(code, str) and code]


def _from_report(report: dict) -> dict:
    manifests = report.get("manifests") if isinstance(report.get("manifests"), dict) else {}
    label = report.get("active_manifest")
    active = manifests.get(label) if isinstance(label, str) else None
    if not isinstance(active, dict):
        raise ValueError("the manifest store has no active manifest")
    signature = active.get("signature_info") if isinstance(active.get("signature_info"), dict) else {}
    actions, types, budget = [], {}, [MAX_NODES_WALKED]
    for assertion in active.get("assertions") or []:
        data = assertion.get("data") if isinstance(assertion, dict) else None
        if isinstance(data, dict) and str(assertion.get("label", "")).startswith("c2pa.actions"):
            for action in data.get("actions") or []:
                if isinstance(action, dict) and isinstance(action.get("action"), str):
                    actions.append(clean_text(action["action"], 60))
    _source_types(active.get("assertions") or [], types, budget)
    for manifest in list(manifests.values())[:MAX_MANIFESTS_WALKED]:
        if manifest is not active and isinstance(manifest, dict):
            _source_types(manifest.get("assertions") or [], types, budget)
    ingredients = [item for item in active.get("ingredients") or [] if isinstance(item, dict)]
    codes = _failure_codes(report, ingredients)
    state = str(report.get("validation_state") or "")  # "Invalid", "Valid" or "Trusted"
    integrity_failures = [code for code in codes if code not in _UNTRUSTED_CODES]
    invalid = state == "Invalid" if state else bool(integrity_failures)
    trusted = state == "Trusted" and not invalid
    if invalid:
        validation = _worst(_state_of(code) for code in integrity_failures) or "malformed"
    elif integrity_failures:  # c2pa still calls the manifest valid (e.g. an ingredient's problem)
        validation = _worst(_state_of(code) for code in integrity_failures)
    else:
        validation = "valid" if trusted else "untrusted signer"
    source_types = tuple(name for name in types if name)
    return {
        "status": "invalid" if invalid else "valid",
        "validation": validation,
        "trusted": trusted,
        "claim_generator": _generator(active),
        "signer": clean_text(signature.get("issuer")) or clean_text(signature.get("common_name")),
        "signed_at": clean_text(signature.get("time"), 40),
        "actions": tuple(dict.fromkeys(action for action in actions if action))[:MAX_ACTIONS],
        "digital_source_types": source_types,
        "ai_generated": any(name in AI_SOURCE_TYPES for name in source_types),
        "ingredients": tuple(clean_text(item.get("title")) or "(untitled)" for item in ingredients[:MAX_INGREDIENTS]),
        "ingredient_count": len(ingredients),
        "manifest_count": len(manifests),
        "validation_codes": tuple(clean_text(code, 80) for code in (integrity_failures or codes)[:MAX_CODES]),
    }


_REMOTE_URL = re.compile(r"(https?://\S+)")



def read_credentials(source: SourceBytes, scan: Scan, max_manifest_bytes: int, time_limit_s: Optional[float],
                     trust_anchors) -> dict[str, Any]:
    """The Provenance fields the manifest store of ``source`` gives (``scan``: the pre-scan's findings, which
    saw a store, a hint of one or a remote reference): the credentials read, or ``status="error"`` with a
    message for a person; {} when c2pa finds no credentials behind a mere hint. Never raises for bad input."""
    if scan.store and scan.store_bytes is not None and scan.store_bytes > max_manifest_bytes:
        return {"status": "error", "error": f"manifest store of {scan.store_bytes / (1 << 20):.1f} MB is "
                                            f"larger than the {max_manifest_bytes / (1 << 20):g} MB checked"}
    try:
        anchors = _trust_anchors(trust_anchors)
    except (OSError, ValueError) as error:
        return {"status": "error", "error": f"trust anchors unreadable: {_error_message(error)}"}
    try:
        _context(anchors)  # imports c2pa and builds its context (once), outside the read's deadline
    except ImportError as error:
        return {"status": "error", "error": f"the c2pa library is unavailable: {_error_message(error)}"}
    except Exception as error:  # noqa: BLE001 - c2pa refuses the settings: the trust anchors' PEM
        return {"status": "error", "error": f"trust anchors refused by c2pa: {_error_message(error)}"}
    try:
        report_json = _bounded(lambda: _read_store(source, scan.mime, anchors), time_limit_s)
    except TimeoutError as error:
        return {"status": "error", "error": str(error)}
    except Exception as error:  # noqa: BLE001 - c2pa's errors (C2paError and its kinds, OSError from streams)
        message = _error_message(error)
        remote = _REMOTE_URL.search(message) if type(error).__name__ == "_C2paRemoteManifest" or \
            message.startswith("Remote:") else None
        if remote:
            return {"status": "none", "remote_manifest_url": clean_text(remote[1].rstrip(".,;)"), 300)}
        if not scan.store:
            return {}  # only a hint or an XMP mention, and c2pa sees no credentials in it
        return {"status": "error", "manifest_bytes": scan.store_bytes, "error": f"unreadable manifest store: {message}"}
    if report_json is None:
        if scan.store:
            return {"status": "error", "manifest_bytes": scan.store_bytes,
                    "error": "corrupt manifest store (the c2pa library finds no manifest in it)"}
        return {}
    if len(report_json) > MAX_JSON_CHARS:
        return {"status": "error", "error": "manifest store report too large to check"}
    try:
        report = json.loads(report_json)
        if not isinstance(report, dict):
            raise ValueError("not an object")
        return _from_report(report)
    except (ValueError, TypeError, AttributeError, RecursionError) as error:
        return {"status": "error", "error": f"unreadable manifest store: {_error_message(error)}"}
