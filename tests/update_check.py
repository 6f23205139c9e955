"""One SDAR update on fixed synthetic samples, run under `accelerate launch` by test_train.py.

Every process builds the same model and the same samples, keeps its share (rank::world), runs
`update.update_policy` once with plain SGD at lr 1 (so the parameter change equals the gradient), and
the main process writes the parameter change to the path given as argv[1], with the number of
processes and whether the weights were sharded (FSDP2 DTensors), so a test can tell that the launch
did what it asked for.
"""

import os
import random
import sys

import torch
from accelerate import Accelerator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import CORPUS  # noqa: E402
from config import TrainConfig, resolve  # noqa: E402
from opsd import pack_batch  # noqa: E402
from tools.tinymodel import build_tokenizer, tiny_model  # noqa: E402
from experience import Experience  # noqa: E402
from update import update_policy  # noqa: E402


def synthetic_experience(tokenizer, n: int = 8):
    """n seeded step samples (random prompts, responses of 0-6 tokens, advantages, log-probs) packed into
    the `Experience` update_policy takes."""
    rng, generator = random.Random(0), torch.Generator().manual_seed(0)
    prompts, responses, advantages, logps = [], [], [], {"old": [], "ref": [], "teacher": []}
    for _ in range(n):
        responses.append([rng.randrange(3, len(tokenizer)) for _ in range(rng.randrange(0, 7))])
        prompts.append([rng.randrange(3, len(tokenizer)) for _ in range(rng.randrange(2, 9))])
        advantages.append(rng.uniform(-1, 1))
        for key in logps:
            logps[key].append(-torch.rand(len(responses[-1]), generator=generator) * 3)
    input_ids, attention_mask, response_mask = pack_batch(prompts, responses, tokenizer.pad_token_id)  # (n, P+T)
    padded = {key: torch.zeros(response_mask.shape) for key in logps}                                   # (n, T)
    for key, rows in logps.items():
        for i, row in enumerate(rows):
            padded[key][i, :len(row)] = row
    return Experience(input_ids, attention_mask, response_mask, input_ids, attention_mask,
                      torch.tensor(advantages), padded["old"], padded["ref"], padded["teacher"])


def main(out_path: str, loss_agg: str, micro_batch_size: int) -> None:
    accelerator = Accelerator(cpu=True)
    tokenizer = build_tokenizer(CORPUS * 20, vocab_size=512)
    model = tiny_model(tokenizer, seed=0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    experience = synthetic_experience(tokenizer)
    mine = list(range(accelerator.process_index, 8, accelerator.num_processes))
    cfg = resolve(TrainConfig(mini_batch_size=8, micro_batch_size=micro_batch_size, loss_agg=loss_agg, grad_clip=1e9,
                              kl_coef=0.01, max_new_tokens=8))     # the budget of these 0-6 token responses
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    update_policy(model, optimizer, accelerator, experience[mine], cfg, torch.Generator().manual_seed(0), {})
    sharded = type(next(model.parameters())).__name__ == "DTensor"
    after = accelerator.get_state_dict(model)     # whole weights: a collective under FSDP (every process calls it)
    if accelerator.is_main_process:
        torch.save({"processes": accelerator.num_processes, "sharded": sharded,
                    "deltas": [before[name] - after[name] for name in before]}, out_path)
    accelerator.wait_for_everyone()
    accelerator.end_training()        # closes the process group: exiting with it open can abort in gloo's teardown


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
