"""`featstore pretrain`."""

from __future__ import annotations

import click

from featstore_cli.options import echo_json, json_option

EXAMPLES = """
\b
Examples:
  featstore pretrain --model timm:test_resnet --dataset fashion-mnist --noise 0.2 --out weights/noise20
  featstore pretrain --model timm:resnet18 --dataset ./imagenet-subset.csv --epochs 90 --device cuda --out rn18
  featstore extract --backbone timm:test_resnet --weights weights/noise20/model.safetensors --dataset mnist-5k
"""


@click.command(epilog=EXAMPLES)
@click.option("--model", default="timm:test_resnet", show_default=True, help="timm:NAME, trained from scratch.")
@click.option("--dataset", required=True, help="Built-in name or path of a labelled image data set.")
@click.option("--split", default="train", show_default=True)
@click.option("--out", required=True, help="Folder for model.safetensors, model.json and the checkpoint.")
@click.option("--noise", type=float, default=0.0, show_default=True, help="Label-noise ratio in [0, 1).")
@click.option("--noise-kind", type=click.Choice(["symmetric", "symmetric-all", "pairflip"]),
              default="symmetric", show_default=True)
@click.option("--noise-seed", type=int, default=None, help="Seed of the noise [default: --seed].")
@click.option("--limit", type=int, default=None, help="Train on a seeded subset of N samples.")
@click.option("--epochs", type=int, default=5, show_default=True)
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=1e-2, show_default=True)
@click.option("--weight-decay", type=float, default=0.05, show_default=True)
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True)
@click.option("--image-size", type=int, default=32, show_default=True)
@click.option("--val-fraction", type=float, default=0.1, show_default=True,
              help="Clean validation split carved from the data before the noise.")
@click.option("--no-augment", is_flag=True, help="No random crop / flip.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--restart", is_flag=True, help="Discard a finished or interrupted run in --out.")
@json_option
def pretrain(model: str, dataset: str, split: str, out: str, noise: float, noise_kind: str,
             noise_seed: int | None, limit: int | None, epochs: int, batch_size: int, lr: float,
             weight_decay: float, optimizer: str, image_size: int, val_fraction: float,
             no_augment: bool, seed: int, device: str, restart: bool, as_json: bool) -> None:
    """Pre-train a timm model on clean or noisy labels (checkpoint each epoch; a killed
    run resumes when rerun), and write weights with a model card for `extract --weights`."""
    from featstore.workflows.pretrain import PretrainConfig
    from featstore.workflows.pretrain import pretrain as run

    cfg = PretrainConfig(model=model, dataset=dataset, split=split, out=out, limit=limit,
                         noise=noise, noise_kind=noise_kind, noise_seed=noise_seed, epochs=epochs,
                         batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         optimizer=optimizer, image_size=image_size, val_fraction=val_fraction,
                         augment=not no_augment, seed=seed, device=device)
    card = run(cfg, restart=restart, echo=None if as_json else click.echo)
    if as_json:
        echo_json(card)
        return
    click.echo(f"{out}/model.safetensors: {model}, {card['noise']['ratio']:.0%} label noise, "
               f"{card['epochs']} epochs, clean val accuracy {card['clean_val_accuracy']:.4f}")
    click.echo(f"extract with: featstore extract --backbone {model} --weights {out}/model.safetensors "
               "--dataset ...")
