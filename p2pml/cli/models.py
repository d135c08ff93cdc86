"""Commands on trained models: model get/show, predict."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from p2pml.cli.common import ProgressBar, client, fail, show


def cmd_model(args: argparse.Namespace) -> int:
    if args.model_cmd == "get":
        return model_get(args)
    return model_show(args)


def model_get(args: argparse.Namespace) -> int:
    """Save the task's best model (or --result's) and its card beside it."""
    from p2pml.client import _download_checked
    from p2pml.ml.modelfile import ModelCard, card_path, write_card

    c = client(args)
    if not args.result:
        fed = c.get(f"/tasks/{args.task_id}").get("federated")
        if fed is not None:
            return federated_model_get(args, c, fed)
    base = f"/results/{args.result}/model" if args.result else f"/tasks/{args.task_id}/model"
    card = ModelCard.from_json(c.get(base + "/card"), "model card from the node")
    dest = Path(args.output or f"model-{(args.result or args.task_id)[:16]}.skops")
    _download_checked(c, base, dest, card.model_cid, ProgressBar(f"model {card.model_cid[:12]}"))
    write_card(card_path(dest), card)
    summary = {"file": str(dest), "card": str(card_path(dest)), **card.to_json()}
    show(
        args,
        summary,
        f"saved {dest} ({dest.stat().st_size} bytes, CID {card.model_cid} checked)\n"
        f"card  {card_path(dest)}: {card.model}, {card.metric} {card.metric_value}, "
        f"{len(card.features)} features -> {card.target}",
    )
    return 0


def federated_model_get(args: argparse.Namespace, c: Any, fed: dict[str, Any]) -> int:
    """A federated task's global model: the canonical bytes of docs/federated.md
    §4, checked against their CID and against the hash the chain committed."""
    import hashlib

    from p2pml.client import _download_checked

    cid, digest = fed.get("model_cid"), fed.get("model_hash")
    if not cid or not digest:
        return fail("this node holds no global model of the task yet")
    dest = Path(args.output or f"model-{args.task_id[:16]}.p2fl")
    _download_checked(
        c, f"/tasks/{args.task_id}/model", dest, cid, ProgressBar(f"model {cid[:12]}")
    )
    if hashlib.sha256(dest.read_bytes()).hexdigest() != digest:
        dest.unlink(missing_ok=True)
        return fail(f"the downloaded model is not the committed one ({digest})")
    summary = {"file": str(dest), "model_cid": cid, "model_hash": digest, "round": fed["round"]}
    show(
        args,
        summary,
        f"saved {dest} (global model after round {fed['round']}, hash {digest} checked)",
    )
    return 0


def model_show(args: argparse.Namespace) -> int:
    from p2pml.ml.modelfile import load_file

    loaded = load_file(Path(args.file), use_card=not args.no_card)
    params = loaded.model.get_params(deep=False)
    info: dict[str, Any] = {
        "estimator": loaded.estimator,
        "class": type(loaded.model).__name__,
        "params": params,
        "n_features": loaded.n_features,
        "classes": loaded.classes,
    }
    card = loaded.card
    if card is not None:
        info.update(
            task=card.task,
            result=card.result,
            model_cid=card.model_cid,
            target=card.target,
            features=list(card.features),
            metric={card.metric: card.metric_value},
        )
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True, default=str))
        return 0
    lines = [
        f"estimator  {loaded.estimator} ({type(loaded.model).__module__}."
        f"{type(loaded.model).__name__})",
        "params     " + ", ".join(f"{k}={v!r}" for k, v in sorted(params.items())),
        f"features   {loaded.n_features}",
    ]
    if loaded.classes is not None:
        lines.append("classes    " + ", ".join(str(c) for c in loaded.classes))
    if card is not None:
        lines += [
            f"target     {card.target}",
            "columns    " + ", ".join(card.features),
            f"metric     {card.metric} {card.metric_value}",
            f"task       {card.task}",
            f"result     {card.result}",
            f"model CID  {card.model_cid}",
        ]
    else:
        lines.append("card       none (feature columns unknown: use p2pml model get)")
    print("\n".join(lines))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from p2pml.ml.modelfile import load_file
    from p2pml.ml.predict import predict_frame, read_rows

    features = args.features.split(",") if args.features else None
    loaded = load_file(Path(args.model), use_card=True)
    df = read_rows(Path(args.data))
    out = predict_frame(loaded, df, features=features, proba=args.proba, where=args.data)
    if args.output:
        out.to_csv(args.output, index=False)
        print(f"{len(out)} predictions written to {args.output}", file=sys.stderr)
    else:
        out.to_csv(sys.stdout, index=False)
    return 0
