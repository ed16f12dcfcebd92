"""Runs bundles the way a user without genesis does: transformers, PEFT, pipeline.

Started by tests/test_hub.py in a fresh interpreter where importing genesis fails (a
finder placed first on `sys.meta_path` refuses it), so nothing here can lean on it.
Reads a plan (a JSON list of checks) and writes a JSON list of answers computed by the
ecosystem's own code (to a file: transformers may print on stdout).

    python hf_run.py PLAN.json ANSWERS.json

A check: {"bundle": FOLDER, "ids": [...], "adapter": FOLDER or null, "generate": N,
"pipeline": PROMPT or null, "encode": TEXT or null, "no_remote_code": BOOL}, or {"lm_eval": [ARGUMENTS], "output":
FOLDER}: the `lm_eval` command line with those arguments, answered by its results file.
"""

import json
import sys


class _NoGenesis:
    """Refuses genesis and every module under it."""

    def find_spec(self, name, path=None, target=None):
        if name == "genesis" or name.startswith("genesis."):
            raise ModuleNotFoundError(f"No module named {name!r}: this check runs without genesis")
        return None


sys.meta_path.insert(0, _NoGenesis())


def lm_eval(arguments: list, output: str) -> dict:
    """Run the `lm_eval` command (its console entry point) and read its results."""
    import glob

    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *arguments, "--output_path", output]
    try:
        cli_evaluate()
    except SystemExit as done:  # the command line ends by exiting
        if done.code:
            raise
    [results] = glob.glob(f"{output}/*/results_*.json")
    with open(results) as handle:
        return json.load(handle)["results"]


def check(plan: dict) -> dict:
    if "lm_eval" in plan:
        return lm_eval(plan["lm_eval"], plan["output"])
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    model = AutoModelForCausalLM.from_pretrained(plan["bundle"], trust_remote_code=not plan.get("no_remote_code"))
    if plan.get("adapter"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, plan["adapter"])
    model.eval()
    answer = {"class": type(model).__name__}
    ids = plan.get("ids") or []
    if ids:
        with torch.no_grad():
            answer["logits"] = model(input_ids=torch.tensor([ids])).logits[0].tolist()
    if plan.get("generate"):
        with torch.no_grad():
            out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=plan["generate"], do_sample=False)
        answer["generated"] = out[0, len(ids):].tolist()
    if plan.get("encode") is not None:
        tokenizer = AutoTokenizer.from_pretrained(plan["bundle"])
        answer["tokenizer"] = type(tokenizer).__name__
        answer["encoded"] = tokenizer(plan["encode"]).input_ids
        answer["eos"] = tokenizer.eos_token
    if plan.get("pipeline") is not None:
        generator = pipeline("text-generation", model=plan["bundle"], trust_remote_code=True)
        answer["pipeline"] = generator(plan["pipeline"], max_new_tokens=5, do_sample=False)[0]["generated_text"]
    return answer


def main() -> None:
    plan_file, answers_file = sys.argv[1:3]  # read first: the lm_eval check replaces sys.argv
    with open(plan_file) as handle:
        plans = json.load(handle)
    answers = [check(plan) for plan in plans]
    answers.append({"genesis_imported": any(m == "genesis" or m.startswith("genesis.") for m in sys.modules)})
    with open(answers_file, "w") as handle:
        json.dump(answers, handle)


if __name__ == "__main__":
    main()
