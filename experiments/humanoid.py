"""Experiments on the humanoid tasks (``refine_dp_jax.envs.humanoid``).

``humanoid_table_lift`` / ``humanoid_table_place``: REFINE-DP end to end on the two standing
tasks, at the paper's rates (DP at 10 Hz over the 50 Hz LLC: hold 5; observation history
To = 8, chunks of Ta = 12 commands, 6 executed before replanning), with the committed
standing LLC (``STAND_LLC``) loaded, not retrained. Sizes are set for the 2-core CPU.

``humanoid_<task>_tiny``: the testbed's toy sizes (``testbed_tiny``) on each of the four
humanoid tasks, with only environment-side changes: 1 s episodes (every stage runs in seconds
once compiled) and demonstrations executed by the env's reference controller with failed
episodes kept (``demos.keep_failed``): the reference controller holds the legs in the default
pose and cannot walk, so no tiny demonstration succeeds. These configs are smoke tests of the
pipeline's plumbing on the humanoid (tests/test_humanoid_pipeline.py), not experiments.

``humanoid_llc_stand``: stage 1 only (``refine-dp train-llc``): the whole-body LLC on the
robot-only scene ``humanoid_llc``, standing (zero base velocity), tracking random hand poses
and gripper states held 1-3 s, under the paper's domain randomization (payloads, pushes,
floor friction, random arm configurations at reset), reward curriculum over the first
``llc.reward_curriculum_iterations`` iterations. Sized for about 2 hours on 2 CPU cores.

``humanoid_llc_walk`` (CPU sizes) / ``humanoid_llc_walk_gpu`` (4096 envs; run by
``experiments/gpu_llc.py``, ``make gpu-llc``): stage 1 only, the walking LLC: random base
velocities over the whole command range go through the footstep planner into the LLC's
footstep command, hands and grippers as the standing LLC's, warm-started from it with its
exploration noise restarted, a command curriculum on the base velocity
(``LLCConfig.speed_scale_*``). ``humanoid_llc_walk_tiny``: toy sizes from scratch (tests).
"""

from __future__ import annotations

from experiments import register
from experiments.testbed import testbed_tiny
from refine_dp_jax.config import DiffusionConfig, DPPOConfig, PretrainConfig, replace
from refine_dp_jax.data.demos import DemoConfig
from refine_dp_jax.diffusion.networks import DenoiserConfig
from refine_dp_jax.pipeline import BaselineConfig, ExperimentConfig
from refine_dp_jax.train.finetune import FinetuneConfig
from refine_dp_jax.train.gaussian_ppo import PPOConfig
from refine_dp_jax.train.llc import LLCConfig

TASKS = ("box_pickup", "pick_place", "door", "platform", "table_lift", "table_place")


def humanoid_tiny(task: str) -> ExperimentConfig:
    """``testbed_tiny`` on ``humanoid_<task>`` (see the module docstring)."""
    return replace(
        testbed_tiny(),
        env=f"humanoid_{task}",
        env_overrides=(("episode_seconds", 1.0),),
        **{"demos.executor": "reference", "demos.keep_failed": True},
    )


for _task in TASKS:
    register(f"humanoid_{_task}_tiny")(lambda t=_task: humanoid_tiny(t))


# The standing LLC's environment settings: every task that loads this LLC uses the same robot
# interface (the loader checks them).
STAND_ENV = (("command_stand_prob", 1.0), ("command_arm_spread", 1.0))


# What sessions 25-29 added to the standing LLC's environment, one continuation at a time
# (docs/results/llc_falls): harder pushes, the capture-point reward, a sharper hand reward and
# fewer hand targets from the partly unreachable reach box (``humanoid_llc_stand_2h``).
STAND_2H_ENV = (
    ("push_force", 90.0), ("w_capture_point", 2.0), ("sigma_capture_point", 0.03),
    ("sigma_hand_pos", (0.4, 0.1, 0.08, 0.03, 0.015)), ("w_hand_pos", 5.0),
    ("command_reach_prob", 0.25),
)  # fmt: skip


@register("humanoid_llc_stand")
def humanoid_llc_stand() -> ExperimentConfig:
    return ExperimentConfig(
        env="humanoid_llc",
        env_overrides=STAND_ENV,
        seed=0,
        llc=LLCConfig(
            num_envs=512,
            rollout_steps=32,
            iterations=600,
            command_hold_steps=100,  # hand poses and grippers held 1-3 s (50 Hz)
            reward_curriculum_iterations=300,
            eval_episodes=256,
            ppo=PPOConfig(
                lr=3e-4,
                critic_lr=1e-3,
                gamma=0.99,
                gae_lambda=0.95,
                epochs=4,
                minibatches=8,
                init_log_std=-1.0,
                min_log_std=-3.0,
                actor_hidden=(256, 256, 128),
                critic_hidden=(256, 256, 128),
            ),
        ),  # fmt: skip
        ckpt_every=20,
    )


@register("humanoid_llc_stand_2h")
def humanoid_llc_stand_2h() -> ExperimentConfig:
    """The standing LLC from scratch in one command, within issue 13's two hours on 2 CPU
    cores (90 min alone, evaluation included): what the chain of continuations behind the
    earlier ``humanoid_llc_stand_hands`` (3,500 iterations over five sessions; at 52b59d7 in
    the history) learned, from the first iteration: pushes of up to 90 N in training, a
    discount of 0.995, the capture-point reward (weight 2, 3 cm), the sharper hand-position
    reward (kernels down to 1.5 cm, weight 5 each) with a quarter of the hand targets from the
    reach box, and the actor's step annealed from 3e-4 to 5e-5 (the chain's hand-made steps)
    over 1,500 iterations (3.6 s each). Stored as ``STAND_2H_LLC``. The evaluation's settings
    (pushes up to 60 N, half the targets from the reach box) are ``humanoid_llc_stand``'s:
    evaluate with ``--set env_overrides.push_force=60 env_overrides.command_reach_prob=0.5``
    (docs/results/llc_falls)."""
    stand = humanoid_llc_stand()
    return replace(
        stand,
        env_overrides=(*STAND_ENV, *STAND_2H_ENV),
        **{"llc.iterations": 1500, "llc.lr_final": 5e-5, "llc.ppo.gamma": 0.995},
    )  # fmt: skip


@register("humanoid_llc_stand_tiny")
def humanoid_llc_stand_tiny() -> ExperimentConfig:
    """``humanoid_llc_stand`` at toy sizes (tests)."""
    return replace(
        humanoid_llc_stand(),
        **{"llc.num_envs": 4, "llc.rollout_steps": 8, "llc.iterations": 2,
           "llc.reward_curriculum_iterations": 2, "llc.ppo.minibatches": 2, "llc.eval_episodes": 4,
           "llc.ppo.actor_hidden": (16,), "llc.ppo.critic_hidden": (16,)},
    )  # fmt: skip


# The committed standing LLC (docs/humanoid.md: how it was trained and how good it is).
STAND_LLC = "refine_dp_jax/assets/llc/humanoid_llc_stand"
# Its continuation against harder pushes (1,100 more PPO iterations against pushes of up to 80,
# then 90 N): falls at the evaluation's 60 N pushes 7.4 -> 3.2 % of 1,024 episodes, hands as
# before (docs/results/llc_falls). The table tasks loaded it until session 31; the walking LLC
# starts from STAND_LLC, as its committed run did.
PUSH90_LLC = "refine_dp_jax/assets/llc/humanoid_llc_stand_push90"


# The standing LLC of ``humanoid_llc_stand_2h``, one command from scratch (90 min): falls 1.0 /
# 1.1 % (training's commands / reachable hand targets, 2,048 episodes at 60 N pushes), hands
# 1.5 cm and 0.097 rad on reachable targets (docs/results/llc_falls).
STAND_2H_LLC = "refine_dp_jax/assets/llc/humanoid_llc_stand_2h"
# The table tasks load it (session 31): one LLC meets the LLC targets and carries both tasks.
TABLE_LLC = STAND_2H_LLC


# Where the walking LLC will be stored once trained (``humanoid_llc_walk_gpu``, below); the
# walking tasks' experiments refuse to build until it exists.
WALK_LLC = "refine_dp_jax/assets/llc/humanoid_llc_walk"

# The walking LLC's environment: base velocity commands over the env's whole range (vx -0.4 to
# 0.8 m/s, vy +-0.4 m/s, yaw rate +-1 rad/s), zero in 20 % of the draws, held 1.5-4.5 s;
# hand targets as the standing LLC's.
WALK_ENV = (("command_stand_prob", 0.2), ("command_arm_spread", 1.0))


@register("humanoid_llc_walk")
def humanoid_llc_walk() -> ExperimentConfig:
    """Stage 1 only: the whole-body LLC walking where the footstep planner says while tracking
    hand poses and grippers, warm-started from the committed standing LLC (same networks and
    interface; fresh optimizer; the reward curriculum restarts; the exploration noise
    restarts at std 0.37, the standing LLC's ~0.13 being too small to find a step), with a
    command curriculum
    on the base velocity (starts at 25 % of the range, +5 % after each iteration whose
    velocity error on moving commands is below 0.12 m/s: the paper's lin-velocity tracking
    kernel at ~0.8 of its maximum). CPU sizes (2 cores: ~9 s per iteration, 700 iterations
    ~1.7 h; the committed run was stopped by ``--minutes``); a GPU run uses
    ``humanoid_llc_walk_gpu``."""
    stand = humanoid_llc_stand()
    return replace(
        stand,
        env_overrides=WALK_ENV,
        llc_init=STAND_LLC,
        llc_init_reset_noise=True,  # exploration restarts at init_log_std -1 (std 0.37)
        **{"llc.iterations": 700, "llc.command_hold_steps": 100,
           "llc.velocity_hold_steps": 150, "llc.reward_curriculum_iterations": 200,
           "llc.speed_scale_start": 0.25, "llc.speed_scale_step": 0.05,
           "llc.speed_scale_max_err": 0.12},
    )  # fmt: skip


@register("humanoid_llc_walk_gpu")
def humanoid_llc_walk_gpu() -> ExperimentConfig:
    """``humanoid_llc_walk`` at GPU scale: 4096 envs x 20 steps per iteration, 32 minibatches,
    4 epochs (the batch split of MuJoCo Playground's humanoid joystick PPO configs, with half
    their 8192 envs); the iteration count is a ceiling, a lent machine's wall budget stops it
    earlier (``refine-dp train-llc --minutes``, ``experiments/gpu_llc.py``)."""
    return replace(
        humanoid_llc_walk(),
        **{"llc.num_envs": 4096, "llc.rollout_steps": 20, "llc.iterations": 3000,
           "llc.ppo.minibatches": 32, "llc.ppo.epochs": 4,
           "llc.reward_curriculum_iterations": 600, "llc.eval_episodes": 512},
    )  # fmt: skip


@register("humanoid_llc_walk_tiny")
def humanoid_llc_walk_tiny() -> ExperimentConfig:
    """``humanoid_llc_walk`` at toy sizes, from scratch (tests: tiny networks cannot load the
    standing LLC)."""
    return replace(
        humanoid_llc_walk(),
        llc_init="",
        llc_init_reset_noise=False,
        env_overrides=(*WALK_ENV, ("episode_seconds", 2.0)),
        **{"llc.num_envs": 4, "llc.rollout_steps": 8, "llc.iterations": 3,
           "llc.reward_curriculum_iterations": 2, "llc.ppo.minibatches": 2, "llc.eval_episodes": 4,
           "llc.ppo.actor_hidden": (16,), "llc.ppo.critic_hidden": (16,),
           "llc.speed_scale_max_err": 10.0},
    )  # fmt: skip


def table_task(task: str, llc_checkpoint: str = TABLE_LLC, demos: int = 30) -> ExperimentConfig:
    """REFINE-DP on a humanoid task with a stored LLC (the one-command standing LLC for the
    table tasks), pre-trained on ``demos`` planner demonstrations."""
    stand = humanoid_llc_stand()
    return ExperimentConfig(
        env=f"humanoid_{task}",
        seed=0,
        hold=5,  # 10 Hz DP over the 50 Hz LLC
        # networks of the stored LLC; its PPO in joint mode at a tenth of the stand training's
        # step, after 10 critic-only iterations (below)
        llc=replace(stand.llc, iterations=0, ppo=replace(stand.llc.ppo, lr=3e-5)),
        llc_checkpoint=llc_checkpoint,
        demos=DemoConfig(num_episodes=demos, batch_envs=64, max_batches=10),
        diffusion=DiffusionConfig(
            obs_history=8,  # To = 8 (paper)
            horizon=12,  # Ta = 12 (paper)
            exec_steps=6,
            num_steps=20,
            sampler="ddpm",
            ft_steps=10,
            # 512 wide, 20k steps: at the testbed's 256 / 3k the table-lift DP's chunks (12 x
            # 17 from 8 x 34) jumped by up to 3 rad between commands and it lifted 6 % (the
            # planner 62 %); at 512 / 20k: 58 % (loss 0.085 -> 0.018)
            denoiser=DenoiserConfig(kind="mlp", hidden=512, depth=3, time_dim=16),
        ),  # fmt: skip
        pretrain=PretrainConfig(steps=20000, batch_size=256, lr=1e-3, ema_decay=0.995),
        dppo=DPPOConfig(
            # one Adam step per iteration at 1e-5 (measured on table_lift, 64 envs x 8
            # decisions, docs/results/dppo_after_ik: DPPO's 5 epochs x 8 minibatches lowered
            # the pre-trained DP's 47.7 % to 18.0 % in 10 iterations at 1e-4 and to 26.6 % in
            # 20 at 1e-5, as fast as with shuffled advantages; one step per batch held it at
            # 48-53 % over 60 iterations, 3-10 points above its shuffled twin). With 20
            # critic-only epochs per iteration, 3e-5 (2026-12-05, 20-demo table_lift DP, 128
            # deterministic episodes): 75.0 -> 76.6 -> 81.3 -> 84.4 % at 0/20/40/60 (1e-5:
            # 75.0 -> 78.9 % in 120; 5e-5: 72.7 % at 20, its stochastic success halved; 1e-4
            # with 4 x 4 steps: 43.0 % at 20)
            actor_lr=3e-5,
            critic_lr=1e-3,
            critic_epochs=20,
            clip_eps=0.05,
            clip_eps_base=0.005,
            gamma=0.99,
            epochs=1,
            minibatches=1,
            # exploration noise of each sampling step, in the [-1, 1] command space: 0.1
            # (DPPO's and the testbed's) is ~4 cm on a hand; measured on table_lift, the
            # stochastic pre-trained DP then lifted 0-2 % of boxes, at 0.03 25-38 %
            sample_std_floor=0.03,
        ),  # fmt: skip
        # joint mode (2026-12-05, table_lift 20-demo DP, 200 deterministic episodes, same initial
        # states; DP only: 79.5 -> 81.5 -> 90.0 % at iterations 0/20/40): the stored LLC's
        # critic is off on task episodes (value loss 19 against ~4 in its training) and its
        # first PPO update moved it by an approximate KL of 0.27 (fresh Adam, 4 x 8 steps at
        # 3e-4): 85.0 -> 69.0 % in the pipeline. 10 critic-only iterations: KL 0.105 then
        # 0.05-0.06, 79.5 -> 74.0 -> 70.0 %; with lr 3e-5 as well: KL 0.007, 74.0 -> 80.5 %
        finetune=FinetuneConfig(num_envs=64, decisions=8, iterations=40, llc_critic_warmup=10),
        # the baseline's PPO with the same update regime as the DP's (one Adam step per
        # iteration at 1e-5): at the default 5 epochs x 4 minibatches at 1e-4 its 102-dim
        # Gaussian (std 0.135) moved by an approximate KL of 3-13 per update and its success
        # fell from 43 % to 0 after the first iteration (table_lift, 2026-12-05)
        baseline=BaselineConfig(
            bc_steps=3000,
            ppo=replace(BaselineConfig().ppo, lr=1e-5, epochs=1, minibatches=1),
        ),
        task_curriculum=2.0,  # the paper's widened initial ranges for fine-tuning and eval
        eval_episodes=200,
        video_episodes=2,
        ckpt_every=5,
    )


# table_lift: 20 demonstrations. With the reach-aware squeeze (planner 93.8 %) the pre-trained
# DP lifted 85.0 % of 200 boxes at the widened ranges from 20 (DPPO 93.5 %) and 71.0 % from 15
# (DPPO 81.5 %); before it, 77.0 % from 20 and 38.0 % from 10 (docs/results/table_lift)
# Fine-tuned from 128 environments per iteration (session 25, push90 LLC, 20-demo DP, 600
# deterministic episodes, the same initial states): 64 x 8 decisions, the default elsewhere,
# went 78.5 -> 83.8 -> 85.2 % at iterations 0/20/40 and ~89-90 % of 200 by 120 iterations;
# 128 x 8 went 78.5 -> 87.3 -> 94.3 % (the same one Adam step per iteration on twice the
# batch). The timed-out episodes are grasps that slip within the first 2 s (box off centre
# between the jaws): 11.5 % of the pipeline's 200 at 64 envs, 6.0 % at 128.
# On the one-command LLC (session 31, the same 20-demo pipeline at 40 iterations): pre-trained
# 76.5 %, DP only 89.5 %, joint 89.0 % of 200, the DP's stochastic success still rising at
# iteration 40 (0.75 -> 0.82 over the last 8): 60 iterations, 76.5 -> 95.0 / 92.0 % (fresh
# clone, 9a1365e; docs/results/table_lift).
register("humanoid_table_lift")(
    lambda: replace(
        table_task("table_lift", demos=20),
        **{"finetune.num_envs": 128, "finetune.iterations": 60},
    )  # fmt: skip
)
# table_place on the push90 LLC: 50 demonstrations (the paper's headline count; 200 episodes
# at the widened ranges: from 30, pre-trained 76.5 %, DP only 79.5 %, joint 85.0 %; from 50,
# 83.0 / 92.5 / 86.5 %: docs/results/table_place); DPPO at 1e-5 (at the lift's 3e-5 its 77.5 %
# pre-trained DP fell to 66.5 % of 200 episodes in 40 iterations; at 1e-5, with or without the
# 20 critic epochs, it stayed at 79-82 % of 128) with half the lift's exploration noise: the
# place fails under noise that the lift tolerates (planner 85 -> 46 % at 0.03), and on the
# same DP and 200 episodes 40 iterations went 80.5 -> 88.5 % at 0.015 against 80.5 -> 78.0 %
# at 0.03 (at 0.015 and 3e-5: 58.5 % at 20)
# On the one-command LLC (session 30-31, 200 episodes): from 50 demonstrations pre-trained
# 88.5 % (above the 20-85 % band), DP only 89.0 %, joint 90.0 %; from 30, 76.5 / 81.5
# / 86.5 % (a joint curve on that DP, 200 other episodes: 76.0 -> 80.5 -> 78.5 -> 80.5 % at
# 0/20/40/60): 40, 78.0 -> 91.5 % (DP only) / 85.5 % (joint) (fresh clone, d099432;
# docs/results/table_place), 89.1 / 84.3 % of 1,000. Fine-tuned from 128 environments per
# iteration, as the lift (the same one Adam step on twice the batch; session 32, the same
# 40-demo DP): 78.0 -> 92.5 / 91.0 % of 200 (91.8 / 87.5 % of 1,000), 40.8 min alone.
register("humanoid_table_place")(
    lambda: replace(
        table_task("table_place", demos=40),
        **{"finetune.num_envs": 128, "dppo.actor_lr": 1e-5, "dppo.sample_std_floor": 0.015},
    )  # fmt: skip
)


# The paper's four tasks at full size: they need the walking LLC (WALK_LLC), not trained yet.
for _task in ("box_pickup", "pick_place", "door", "platform"):
    register(f"humanoid_{_task}")(lambda t=_task: table_task(t, WALK_LLC))
