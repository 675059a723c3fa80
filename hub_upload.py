"""Publish a trained CenterFocus folder as a self-contained Hugging Face Hub repository (trust_remote_code=True).

    python hub_upload.py MODEL_DIR --repo-id OWNER/NAME [--private] [--revision BRANCH] [--dry-run OUT_DIR]
        [--license apache-2.0] [--commit-message MESSAGE] [--dataset OWNER/DATASET] [--refresh-code]
        [--space OWNER/SPACE [--space-only]]

The folder is checked (no pickle files, code files and safetensors weights present), assembled with a model card,
and loaded and run in a fresh process without the centerfocus package before anything is uploaded; `--dry-run` stops
there and leaves the folder in OUT_DIR.
With `--space OWNER/SPACE`, a Gradio Space that captions with the model repository is assembled too (centerfocus's
captioning page as a standalone app.py, requirements.txt, a Space card; `centerfocus.tools.hub_space`), and its app is
run in a fresh process without the package against the assembled model folder: its caption of the test image must be
generate()'s. Both are uploaded only when both passed (`--space-only`: the model is on the Hub already; upload only
the Space); `--dry-run OUT_DIR` then leaves OUT_DIR/model and OUT_DIR/space. The check needs Gradio
(`pip install "centerfocus[app]"`). The token comes from `HF_TOKEN` or `huggingface-cli login`, never from the
command line. Exit codes: 0 done, 1 refused (nothing uploaded), 2 bad arguments, 3 the upload itself failed.
See docs/hub.md.
"""

import argparse
import logging
import sys
from typing import Optional


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="hub_upload.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="Trained folder (centerfocus train --output_dir).")
    parser.add_argument("--repo-id", required=True, metavar="OWNER/NAME", help="Hub repository to create or update.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--revision", metavar="BRANCH", help="Branch to commit to (created when missing; default main).")
    parser.add_argument("--dry-run", metavar="OUT_DIR", help="Assemble and verify into OUT_DIR; upload nothing.")
    parser.add_argument("--license", default="apache-2.0", help="Hub license id for the model card.")
    parser.add_argument("--commit-message", help="Commit message (default: 'Upload CenterFocus model (N files)').")
    parser.add_argument("--dataset", action="append", metavar="OWNER/DATASET",
                        help="Hub dataset id the model was trained on (repeatable; default: centerfocus_training.json"
                             " in MODEL_DIR when present).")
    parser.add_argument("--refresh-code", action="store_true",
                        help="Ship the installed package's code files instead of MODEL_DIR's own copies.")
    parser.add_argument("--space", metavar="OWNER/SPACE",
                        help="Also publish a Gradio Space captioning with the model (OUT_DIR/space for --dry-run).")
    parser.add_argument("--space-only", action="store_true",
                        help="With --space: the model repository is on the Hub already; upload only the Space.")
    parser.add_argument("--verify-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="Time limit of the verification process (default 300).")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Run the command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.space_only and not args.space:
        parser.error("--space-only needs --space OWNER/SPACE")
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)

    from centerfocus.tools.hub import HubClientError, HubUploadError, publish, redact

    options = dict(private=args.private, revision=args.revision, dry_run_dir=args.dry_run, license=args.license,
                   commit_message=args.commit_message, datasets=args.dataset, refresh_code=args.refresh_code,
                   verify_timeout=args.verify_timeout)
    space = None
    try:
        if args.space:
            from centerfocus.tools.hub_space import publish_with_space

            result, space = publish_with_space(args.model_dir, args.repo_id, args.space, space_only=args.space_only,
                                               **options)
        else:
            result = publish(args.model_dir, args.repo_id, **options)
    except HubUploadError as error:
        print(f"hub_upload.py: refused, nothing uploaded: {redact(str(error))}", file=sys.stderr)
        return 1
    except HubClientError as error:  # network, permissions, ...
        print(f"hub_upload.py: upload failed: {redact(str(error))}", file=sys.stderr)
        return 3
    print(f"Verified {len(result.files)} files (test caption: {result.caption!r}):")
    print("\n".join(f"  {name}" for name in result.files))
    if space is not None:
        print(f"Verified the Space's {len(space.files)} files (its app's test caption: {space.caption!r}):")
        print("\n".join(f"  {name}" for name in space.files))
    if args.dry_run:
        print(f"Dry run: nothing uploaded; the repository folder is {result.folder}"
              + (f", the Space folder {space.folder}" if space is not None else ""))
        return 0
    if result.commit_url is not None:
        print(f"Uploaded to https://huggingface.co/{args.repo_id} ({args.revision or 'main'}): {result.commit_url}")
    if space is not None:
        print(f"Uploaded the Space to https://huggingface.co/spaces/{args.space}: {space.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
