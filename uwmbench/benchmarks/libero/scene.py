"""A LIBERO scene: everything that decides what the simulator does from one moment on.

The flattened MuJoCo state (time, qpos, qvel) is not enough. Three more things live outside it:

- **fixture placements**: LIBERO places fixtures (the desk caddy, the flat stove, the cabinet,
  the wine rack, ...) by writing ``model.body_pos`` / ``model.body_quat`` at ``env.reset()``,
  drawn from numpy's global RNG; they are part of the MJCF (``model_file`` in LIBERO's files),
  not of the state;
- **the OSC controller's nullspace target** (``controller.initial_joint``), taken from the robot's
  joints when the controller is built at reset (robosuite adds Gaussian noise to them);
- **the gripper's command ramp** (``gripper.current_action``), which robosuite keeps on the
  gripper *model object*: a soft reset does not clear it, so it leaks from one episode into the
  next unless it is set;
- **the constraint solver's warm start** (``MjData.qacc_warmstart``): restoring a mid-episode
  state without it changes contact forces at the 1e-10 level, which contacts amplify.

:class:`Scene` holds all of them; :func:`capture_scene` reads them from a live env and
:func:`apply_scene` restores them without rebuilding the simulator (``sim.reset()`` clears every
MjData field, warm starts included, then the state is set and the controller rebuilt), so an
episode is a pure function of its scene: it does not depend on earlier episodes in the same
process. :func:`scene_from_demo` rebuilds a demo's scene from an HDF5 group: our own
``uwmbench_scene`` attribute when present (exact), else the official ``model_file`` MJCF (fixture
poses parsed from it) and ``init_state`` / ``states[0]``.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCENE_ATTR = "uwmbench_scene"


class SceneError(ValueError):
    """A stored scene does not fit the env (other task, other condition, malformed)."""


@dataclass
class Scene:
    state: np.ndarray                                      # flattened MuJoCo state (time, qpos, qvel)
    fixtures: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name -> (pos(3), quat wxyz(4))
    controller_joints: np.ndarray | None = None            # OSC nullspace target; None: the state's arm joints
    gripper_action: np.ndarray | None = None               # gripper command ramp; None: zeros (a fresh gripper)
    warmstart: np.ndarray | None = None                    # MjData.qacc_warmstart (constraint solver's start); None: zeros

    def to_json(self) -> str:
        return json.dumps({
            "state": np.asarray(self.state, np.float64).tolist(),
            "fixtures": {k: [np.asarray(p, np.float64).tolist(), np.asarray(q, np.float64).tolist()]
                         for k, (p, q) in sorted(self.fixtures.items())},
            "controller_joints": None if self.controller_joints is None else np.asarray(self.controller_joints).tolist(),
            "gripper_action": None if self.gripper_action is None else np.asarray(self.gripper_action).tolist(),
            "warmstart": None if self.warmstart is None else np.asarray(self.warmstart).tolist(),
        })

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "scene") -> "Scene":
        try:
            d = json.loads(text)
            fixtures = {k: (np.asarray(v[0], np.float64), np.asarray(v[1], np.float64)) for k, v in d["fixtures"].items()}
            cj, ga, ws = d.get("controller_joints"), d.get("gripper_action"), d.get("warmstart")
            return cls(state=np.asarray(d["state"], np.float64), fixtures=fixtures,
                       controller_joints=None if cj is None else np.asarray(cj, np.float64),
                       gripper_action=None if ga is None else np.asarray(ga, np.float64),
                       warmstart=None if ws is None else np.asarray(ws, np.float64))
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise SceneError(f"{where}: not a uwmbench scene ({type(e).__name__}: {e})") from None

    def with_state(self, state: np.ndarray) -> "Scene":
        return Scene(np.asarray(state, np.float64).reshape(-1), dict(self.fixtures), self.controller_joints,
                     self.gripper_action, None)


def _robot(rs):
    return rs.robots[0]


def fixture_body_ids(rs) -> dict[str, int]:
    m = rs.sim.model
    return {name: m.body_name2id(obj.root_body) for name, obj in rs.fixtures_dict.items()}


def capture_scene(rs) -> Scene:
    """The scene of a robosuite/LIBERO env (``ControlEnv.env``) as it is now."""
    m = rs.sim.model
    fixtures = {n: (np.array(m.body_pos[b], np.float64), np.array(m.body_quat[b], np.float64))
                for n, b in fixture_body_ids(rs).items()}
    robot = _robot(rs)
    cj = np.array(robot.controller.initial_joint, np.float64)
    ga = np.array(robot.gripper.current_action, np.float64) if robot.has_gripper else None
    return Scene(state=np.array(rs.sim.get_state().flatten(), np.float64), fixtures=fixtures,
                 controller_joints=cj, gripper_action=ga, warmstart=np.array(rs.sim.data.qacc_warmstart, np.float64))


def apply_scene(rs, scene: Scene, where: str = "scene") -> None:
    """Restore ``scene`` in a live env without rebuilding the simulator. Call after a (soft)
    ``env.reset()`` so that robosuite's own per-episode bookkeeping (timestep, observables,
    robot buffers) is fresh; everything that carries over is then overwritten here."""
    sim = rs.sim
    m = sim.model
    ids = fixture_body_ids(rs)
    unknown = sorted(set(scene.fixtures) - set(ids))
    if unknown:
        raise SceneError(f"{where}: fixture(s) {unknown} are not in this env (its fixtures: {sorted(ids)}); "
                         "a scene of another task?")
    for name, (pos, quat) in scene.fixtures.items():
        m.body_pos[ids[name]] = pos
        m.body_quat[ids[name]] = quat
    state = np.asarray(scene.state, np.float64).reshape(-1)
    expect = sim.get_state().flatten().shape[0]
    if state.shape[0] != expect:
        raise SceneError(f"{where}: state has {state.shape[0]} values but the sim has {expect} "
                         "(a state of another task or condition?)")
    sim.reset()                       # every MjData field, solver warm start included
    sim.set_state_from_flattened(state)
    sim.forward()
    robot = _robot(rs)
    robot._load_controller()          # a fresh controller: no goal or torque left from before
    robot.controller.update_base_pose(robot.base_pos, robot.base_ori)
    joints = (np.array(sim.data.qpos[robot._ref_joint_pos_indexes], np.float64) if scene.controller_joints is None
              else np.asarray(scene.controller_joints, np.float64))
    robot.controller.initial_joint = joints.copy()
    if robot.has_gripper:
        ga = scene.gripper_action
        robot.gripper.current_action = (np.zeros(robot.gripper.dof) if ga is None else np.asarray(ga, np.float64).copy())
    sim.forward()
    if scene.warmstart is not None:
        sim.data.qacc_warmstart[:] = scene.warmstart


def fixtures_from_model_xml(xml: str, rs, where: str = "model_file") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fixture poses of a LIBERO MJCF (a demo's ``model_file``), by the env's fixture root bodies."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise SceneError(f"{where}: not a readable MJCF ({e})") from None
    bodies = {b.get("name"): b for b in root.iter("body")}
    out = {}
    for name, obj in rs.fixtures_dict.items():
        b = bodies.get(obj.root_body)
        if b is None:
            raise SceneError(f"{where}: no body {obj.root_body!r} (fixture {name}); a model of another task?")
        pos = np.array([float(x) for x in (b.get("pos") or "0 0 0").split()], np.float64)
        quat = np.array([float(x) for x in (b.get("quat") or "1 0 0 0").split()], np.float64)
        out[name] = (pos, quat)
    return out


def scene_from_demo(group: Any, rs, where: str, exact: bool = True) -> Scene:
    """The scene a demo (an h5py group ``data/demo_i``) starts from: its ``uwmbench_scene``
    attribute (exact), else ``model_file`` + ``init_state`` (or ``states[0]``) as LIBERO writes them,
    with the controller's nullspace target at LIBERO's reset pose and the gripper ramp saturated
    at the first action's sign (what 5 dropped settle steps leave; see the helpers below). ``exact=False`` ignores
    ``uwmbench_scene``: what a tool that knows only LIBERO's layout can rebuild."""
    attrs = group.attrs
    if exact and SCENE_ATTR in attrs:
        return Scene.from_json(attrs[SCENE_ATTR], where=f"{where} attribute {SCENE_ATTR}")
    if "init_state" in attrs:
        state = np.asarray(attrs["init_state"], np.float64)
    elif "states" in group:
        state = np.asarray(group["states"][0], np.float64)
    else:
        raise SceneError(f"{where}: neither attribute 'init_state' nor dataset 'states' (cannot rebuild the scene)")
    fixtures = {}
    if "model_file" in attrs:
        xml = attrs["model_file"]
        fixtures = fixtures_from_model_xml(xml.decode() if isinstance(xml, bytes) else str(xml), rs,
                                           where=f"{where} attribute model_file")
    return Scene(state=state, fixtures=fixtures, controller_joints=_reset_joints(rs),
                 gripper_action=_gripper_ramp(rs, group))


def _reset_joints(rs) -> np.ndarray:
    """The arm pose LIBERO resets to: what the recording's controller took as its nullspace target
    when the episode began (exact without reset noise)."""
    return np.array(_robot(rs).init_qpos, np.float64)


def _gripper_ramp(rs, group) -> np.ndarray | None:
    """The Panda gripper's command ramp at states[0] of a LIBERO file: LIBERO drops the first 5
    recorded steps, enough for the ramp to saturate at the sign of the gripper command, so it is
    taken from the first kept action (open: [1, -1], closed: [-1, 1])."""
    robot = _robot(rs)
    if not robot.has_gripper or type(robot.gripper).__name__ != "PandaGripper" or "actions" not in group:
        return None
    a0 = float(group["actions"][0][-1])
    return np.sign(a0) * np.array([-1.0, 1.0]) if a0 != 0 else None


__all__ = ["Scene", "SceneError", "SCENE_ATTR", "capture_scene", "apply_scene", "fixtures_from_model_xml",
           "scene_from_demo"]
