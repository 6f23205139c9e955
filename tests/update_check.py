"""One SDAR update on fixed synthetic samples, run under `accelerate launch` by test_train.py.

Every process builds the same model and the same samples, keeps its share (rank::world), runs
`update.update_policy` once with plain SGD at lr 1 (so the parameter change equals the gradient), and
the main process writes the parameter change to the path given as argv[1].
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
from rollout import StepSample  # noqa: E402
from tinymodel import build_tokenizer, tiny_model  # noqa: E402
from update import update_policy  # noqa: E402


def synthetic_samples(tokenizer, n: int = 8):
    """n seeded step samples (random prompts, responses of 0-6 tokens, advantages, log-probs) in the
    form update_policy takes: (samples, tensors)."""
    rng, generator = random.Random(0), torch.Generator().manual_seed(0)
    samples, tensors = [], {"advantages": [], "old_logp": [], "ref_logp": [], "teacher_logp": []}
    for i in range(n):
        response = [rng.randrange(3, len(tokenizer)) for _ in range(rng.randrange(0, 7))]
        samples.append(StepSample(prompt_ids=[rng.randrange(3, len(tokenizer)) for _ in range(rng.randrange(2, 9))],
                                  response_ids=response, user_message="task", group_id=i // 4, traj_id=i, turn=0,
                                  valid=True, task_type="t", skill_text="skill", skill_category="c"))
        tensors["advantages"].append(torch.tensor(rng.uniform(-1, 1)))
        for key in ("old_logp", "ref_logp", "teacher_logp"):
            tensors[key].append(-torch.rand(len(response), generator=generator) * 3)
    return samples, tensors


def main(out_path: str, loss_agg: str, micro_batch_size: int) -> None:
    accelerator = Accelerator(cpu=True)
    tokenizer = build_tokenizer(CORPUS * 20, vocab_size=512)
    model = tiny_model(tokenizer, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    samples, tensors = synthetic_samples(tokenizer)
    mine = list(range(accelerator.process_index, 8, accelerator.num_processes))
    cfg = resolve(TrainConfig(mini_batch_size=8, micro_batch_size=micro_batch_size, loss_agg=loss_agg, grad_clip=1e9,
                              kl_coef=0.01, max_new_tokens=8))     # the budget of these 0-6 token responses
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    update_policy(model, tokenizer, optimizer, accelerator, [samples[i] for i in mine],
                  {k: [v[i] for i in mine] for k, v in tensors.items()}, cfg, torch.Generator().manual_seed(0), {})
    if accelerator.is_main_process:
        after = list(accelerator.unwrap_model(model).parameters())
        torch.save([(b - a.detach()).clone() for b, a in zip(before, after)], out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
