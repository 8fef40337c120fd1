"""Bit-identical, faster robosuite physics steps for LIBERO's arm + gripper robots.

robosuite runs the controller at every physics sub-step (25 per env step at 20 Hz) and pays
for it three times over: each sub-step calls ``mj_forward`` (the env loop), ``mj_forward``
again (the controller's state update) and ``mj_step`` (which computes the same forward pass a
third time), and the controller's Python re-resolves names, copies arrays and recomputes
constant limits on every call. On this project's CPU machines that is ~60% of a LIBERO env
step without rendering.

:func:`fast_physics` is a context manager around one ``env.step`` call that keeps robosuite's
and LIBERO's own code paths (the same controller equations, gripper logic, observables and
success checks run in the same order) and changes only *how* the sub-step is computed:

* the loop's ``sim.forward()`` becomes ``mj_step1`` (position and velocity stages: what the
  controller reads) and ``sim.step()`` becomes ``mj_step2`` (actuation, acceleration,
  constraint, integration). ``mj_step1 + mj_step2`` is MuJoCo's documented split of
  ``mj_step`` for controllers that need the current state; it does the forward pass once;
* the controller's state update reads the already computed state instead of calling
  ``mj_forward`` again, with the site id, index arrays and Jacobian buffers resolved once;
* on the 24 of 25 sub-steps that are not a new policy step, the arm's torque clipping and the
  gripper's control-range scaling use limits read once (robosuite recomputes the same numbers
  from the model on every call). Policy steps (new goal, robosuite's history buffers) go
  through robosuite's own ``control``.

The result is the same simulation to the last bit, which ``tests/test_fast_physics.py``
checks state by state against robosuite's own step. What is only approximately the same is
robosuite's acceleration-stage bookkeeping *between* sub-steps (force sensors read at a new
policy step see the previous sub-step's values instead of a fresh forward pass with the old
control); nothing in LIBERO's observations, success checks or the dynamics reads them.

Anything the fast path does not know (another controller or robot class, an RK4 integrator,
a MuJoCo without ``mj_step1``) makes :func:`supported` return a reason and the caller falls
back to robosuite's step.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

def _mujoco():
    import mujoco

    return mujoco


def supported(rs: Any) -> str | None:
    """None when :func:`fast_physics` reproduces robosuite's step for this env, else the reason."""
    mujoco = _mujoco()
    if not (hasattr(mujoco, "mj_step1") and hasattr(mujoco, "mj_step2")):
        return "this MuJoCo has no mj_step1/mj_step2"
    try:
        from robosuite.controllers.base_controller import Controller
        from robosuite.environments.robot_env import RobotEnv
        from robosuite.robots.single_arm import SingleArm
    except ImportError as e:  # pragma: no cover - robosuite is a LIBERO dependency
        return f"robosuite is not importable ({e})"
    m = rs.sim.model._model
    if int(m.opt.integrator) == int(mujoco.mjtIntegrator.mjINT_RK4):
        return "the RK4 integrator has no mj_step1/mj_step2 split"
    # the env's pre-action must be robot_env's, or LIBERO's override (which only calls it)
    allowed = {RobotEnv._pre_action}
    try:
        from libero.libero.envs.bddl_base_domain import BDDLBaseDomain

        allowed.add(BDDLBaseDomain._pre_action)
    except ImportError:  # pragma: no cover - LIBERO provides the envs this module serves
        pass
    for cls in type(rs).__mro__:
        own = cls.__dict__.get("_pre_action")
        if own is not None and own not in allowed:
            return f"{cls.__name__}._pre_action is neither robosuite's nor LIBERO's"
        if cls is RobotEnv:
            break
    for robot in rs.robots:
        if type(robot).control is not SingleArm.control:
            return f"robot {type(robot).__name__} is not a robosuite SingleArm"
        if not robot.has_gripper or len(robot.gripper.actuators) == 0:
            return f"robot {type(robot).__name__} has no gripper actuators"
        ctrl = robot.controller
        if type(ctrl).update is not Controller.update:
            return f"controller {type(ctrl).__name__} has its own state update"
        if not hasattr(ctrl, "eef_name"):
            return f"controller {type(ctrl).__name__} has no end-effector site"
    return None


class _Plan:
    """Everything the fast path resolves once per compiled simulator."""

    def __init__(self, rs: Any):
        mujoco = _mujoco()
        self.sim = rs.sim
        m, d = rs.sim.model._model, rs.sim.data._data
        self.m, self.d = m, d
        # mj_fullM's argument order changed in MuJoCo 3.4 (data before the output)
        version = tuple(int(x) for x in mujoco.__version__.split(".")[:2])
        self.full_m_modern = version >= (3, 4)
        self.robots = []
        for robot in rs.robots:
            ctrl = robot.controller
            gripper = robot.gripper
            g_idx = np.array([rs.sim.model.actuator_name2id(a) for a in gripper.actuators])
            g_range = rs.sim.model.actuator_ctrlrange[g_idx]
            low, high = robot.torque_limits
            self.robots.append(dict(
                robot=robot, ctrl=ctrl, gripper=gripper, dim=int(robot.action_dim),
                control_dim=int(ctrl.control_dim), arm_idx=robot._ref_joint_actuator_indexes,
                low=np.array(low), high=np.array(high), g_idx=g_idx,
                g_bias=0.5 * (g_range[:, 1] + g_range[:, 0]), g_weight=0.5 * (g_range[:, 1] - g_range[:, 0]),
                site=int(rs.sim.model.site_name2id(ctrl.eef_name)),
                qpos_index=np.asarray(ctrl.qpos_index), qvel_index=np.asarray(ctrl.qvel_index),
                jacp=np.zeros((3, m.nv)), jacr=np.zeros((3, m.nv)), mass=np.zeros((m.nv, m.nv)),
            ))
        self.action_dim = sum(r["dim"] for r in self.robots)
        # the controller/pre-action replacements, built once per simulator (not per env step)
        controls = [self.control_fn(r) for r in self.robots]
        self.patches = [(rs, "_pre_action", self.pre_action_fn(controls))]
        self.patches += [(r["ctrl"], "update", self.update_fn(r)) for r in self.robots]

    # robosuite's Controller.update without the forward pass (mj_step1 has just computed it)
    def update_fn(self, r: dict):
        mujoco, m, d = _mujoco(), self.m, self.d
        ctrl, sid, qpi, qvi = r["ctrl"], r["site"], r["qpos_index"], r["qvel_index"]
        jacp, jacr, mass = r["jacp"], r["jacr"], r["mass"]
        modern = self.full_m_modern

        def update(force: bool = False) -> None:
            if not (ctrl.new_update or force):
                return
            ctrl.ee_pos = np.array(d.site_xpos[sid])
            ctrl.ee_ori_mat = np.array(d.site_xmat[sid].reshape([3, 3]))
            jacp[:] = 0.0
            jacr[:] = 0.0
            mujoco.mj_jacSite(m, d, jacp, jacr, sid)
            ctrl.ee_pos_vel = np.dot(jacp, d.qvel)
            ctrl.ee_ori_vel = np.dot(jacr, d.qvel)
            ctrl.joint_pos = d.qpos[qpi]
            ctrl.joint_vel = d.qvel[qvi]
            ctrl.J_pos = jacp[:, qvi]
            ctrl.J_ori = jacr[:, qvi]
            ctrl.J_full = np.vstack([ctrl.J_pos, ctrl.J_ori])
            if modern:
                mujoco.mj_fullM(m, d, mass)
            else:
                mujoco.mj_fullM(m, mass, d.qM)
            ctrl.mass_matrix = mass[qvi, :][:, qvi]
            ctrl.new_update = False

        return update

    # SingleArm.control for sub-steps that are not a new policy step
    def control_fn(self, r: dict):
        d = self.d
        robot, ctrl, gripper = r["robot"], r["ctrl"], r["gripper"]
        cd, arm_idx, low, high = r["control_dim"], r["arm_idx"], r["low"], r["high"]
        g_idx, g_bias, g_weight = r["g_idx"], r["g_bias"], r["g_weight"]
        own = type(robot).control

        def control(action, policy_step: bool = False) -> None:
            if policy_step:  # new goal and robosuite's history buffers: its own code
                return own(robot, action, policy_step=True)
            torques = ctrl.run_controller()
            robot.torques = np.clip(torques, low, high)
            d.ctrl[g_idx] = g_bias + g_weight * gripper.format_action(action[cd:])
            d.ctrl[arm_idx] = robot.torques

        return control

    def pre_action_fn(self, controls: list):
        dims = [r["dim"] for r in self.robots]
        total = self.action_dim

        def pre_action(action, policy_step: bool = False) -> None:
            if len(action) != total:
                raise ValueError(f"action has {len(action)} numbers, the robots take {total}")
            cutoff = 0
            for dim, control in zip(dims, controls):
                control(action[cutoff:cutoff + dim], policy_step=policy_step)
                cutoff += dim

        return pre_action


class FastPhysics:
    """Per-env state of the fast path: the plan is rebuilt when the simulator is (hard reset)."""

    def __init__(self):
        self._plan: _Plan | None = None
        self.steps = 0  # env steps taken through the fast path (a check for callers and tests)

    @contextlib.contextmanager
    def __call__(self, rs: Any) -> Iterator[None]:
        mujoco = _mujoco()
        plan = self._plan
        if plan is None or plan.sim is not rs.sim or plan.robots[0]["ctrl"] is not rs.robots[0].controller:
            plan = self._plan = _Plan(rs)
        m, d, sim = plan.m, plan.d, rs.sim
        stage = {"step1": False}

        def forward() -> None:  # the sub-step loop's forward pass: position + velocity stages
            mujoco.mj_step1(m, d)
            stage["step1"] = True

        def step(*args, **kwargs) -> None:
            if stage["step1"]:
                mujoco.mj_step2(m, d)
                stage["step1"] = False
            else:  # not preceded by the loop's forward: the full step
                mujoco.mj_step(m, d)

        patched = [(sim, "forward", forward), (sim, "step", step), *plan.patches]
        for obj, name, fn in patched:
            setattr(obj, name, fn)  # instance attributes shadow the class's methods
        try:
            yield
        finally:
            for obj, name, _ in patched:
                obj.__dict__.pop(name, None)
            if stage["step1"]:  # a forward without its step: finish the forward pass
                mujoco.mj_forward(m, d)
        self.steps += 1


__all__ = ["FastPhysics", "supported"]
