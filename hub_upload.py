"""Publish a trained CenterFocus folder as a self-contained Hugging Face Hub repository (trust_remote_code=True).

    python hub_upload.py MODEL_DIR --repo-id OWNER/NAME [--private] [--revision BRANCH] [--dry-run OUT_DIR]
        [--license apache-2.0] [--commit-message MESSAGE] [--dataset OWNER/DATASET] [--refresh-code]

The folder is checked (no pickle files, code files and safetensors weights present), assembled with a model card,
and loaded and run in a fresh process without the centerfocus package before anything is uploaded; `--dry-run` stops
there and leaves the folder in OUT_DIR. The token comes from `HF_TOKEN` or `huggingface-cli login`, never from the
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
    parser.add_argument("--verify-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="Time limit of the verification process (default 300).")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Run the command; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)

    from centerfocus.tools.hub import HubClientError, HubUploadError, publish, redact

    try:
        result = publish(args.model_dir, args.repo_id, private=args.private, revision=args.revision,
                         dry_run_dir=args.dry_run, license=args.license, commit_message=args.commit_message,
                         datasets=args.dataset, refresh_code=args.refresh_code, verify_timeout=args.verify_timeout)
    except HubUploadError as error:
        print(f"hub_upload.py: refused, nothing uploaded: {redact(str(error))}", file=sys.stderr)
        return 1
    except HubClientError as error:  # network, permissions, ...
        print(f"hub_upload.py: upload failed: {redact(str(error))}", file=sys.stderr)
        return 3
    print(f"Verified {len(result.files)} files (test caption: {result.caption!r}):")
    print("\n".join(f"  {name}" for name in result.files))
    if result.commit_url is None:
        print(f"Dry run: nothing uploaded; the repository folder is {result.folder}")
    else:
        print(f"Uploaded to https://huggingface.co/{args.repo_id} ({args.revision or 'main'}): {result.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
