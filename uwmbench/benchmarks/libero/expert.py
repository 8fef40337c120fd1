"""Scripted expert for LIBERO tasks, driven by the task's BDDL goal.

Goal predicates -> skills:

- ``(On obj target)`` / ``(In obj region)``: top-down pick of ``obj`` (grasp point and gripper yaw
  from the object's collision-geometry box in the simulator), carry above the target (a region
  site, e.g. ``basket_1_contain_region`` / ``flat_stove_1_cook_region``, or another object's top,
  e.g. a plate), lower and release.
- ``(Close region)`` / ``(Open region)`` of an articulated fixture (drawer): push/pull the drawer
  along its joint axis from the region site (best effort).
- ``(Turnon obj)`` / ``(Turnoff obj)``: push the knob's pointer round its vertical hinge with the
  closed fingertips, sweeping an arc about the axis (a stove's knob: on at >= 0.5 rad).

Predicates that already hold are skipped; the episode ends as soon as LIBERO's own success check
(``env._check_success()``) is true. Actions are 7-d OSC_POSE deltas in [-1, 1] (robosuite scales
position by 0.05 m and rotation by 0.5 rad per step); gripper -1 open, +1 closed.
Diversity: ``jitter`` (m) perturbs every waypoint, ``action_noise`` adds Gaussian noise to each
action, and ``speed`` varies the motion gain; all from one seeded ``np.random.Generator``.

Planning runs without rendering; :func:`run_episode` returns the action list and the flattened
sim states so observations can be rendered afterwards by replay (collect.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ExpertConfig:
    jitter: float = 0.0          # m, uniform waypoint perturbation (xy), half of it on z
    action_noise: float = 0.0    # std of Gaussian noise added to the arm part of each action
    speed: float = 1.0           # gain multiplier (randomised +-20% per episode when noise > 0)
    max_steps: int = 600
    pos_tol: float = 0.01
    grasp_depth: float = 0.025   # how far below the object's top the fingers close (capped at half height)
    lift_height: float = 0.15    # carry height above the table objects
    release_clearance: float = 0.03
    push_tilt: float = 0.8      # rad, fingertips-forward tilt while pushing a drawer shut
    drawer_edge: float = 0.035   # push a drawer this far in from its panel's robot-side end
    knob_radius: float = 0.03    # m from a knob's axis where the fingertips push its pointer round
    knob_depth: float = 0.02     # how far below the knob's top the fingertips push
    knob_behind: float = 0.6     # rad behind the pointer where the sweep starts


@dataclass
class EpisodeResult:
    success: bool
    steps: int
    actions: np.ndarray                 # (T, 7)
    states: np.ndarray                  # (T, D): state BEFORE each action (LIBERO layout)
    final_state: np.ndarray
    skills: list[str] = field(default_factory=list)
    error: str = ""


# ----------------------------------------------------------------------------------- sim geometry


def _quat_wxyz_to_mat(q):
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _axis_angle_to_rot(v):
    v = np.asarray(v, dtype=float)
    ang = np.linalg.norm(v)
    if ang < 1e-9:
        return np.eye(3)
    k = v / ang
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(ang) * K + (1 - np.cos(ang)) * K @ K


def _rot_to_axis_angle(R):
    cos = np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)
    ang = np.arccos(cos)
    if ang < 1e-6:
        return np.zeros(3)
    if np.pi - ang < 1e-4:
        # 180 degrees: axis from the diagonal
        ax = np.sqrt(np.maximum((np.diag(R) + 1) / 2, 0))
        i = int(np.argmax(ax))
        ax = R[:, i] + np.eye(3)[i]
        return ax / np.linalg.norm(ax) * ang
    ax = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2 * np.sin(ang))
    return ax * ang


def _subtree_geoms(m, body: int) -> list[int]:
    """Ids of the colliding geoms in ``body``'s subtree, in model order."""
    ids = []
    for g in range(m.ngeom):
        b = m.geom_bodyid[g]
        while b != 0 and b != body:
            b = m.body_parentid[b]
        if b == body and m.geom_contype[g] + m.geom_conaffinity[g] > 0:
            ids.append(g)
    return ids


class SimView:
    """Positions and boxes of objects/sites from a LIBERO env (no rendering needed)."""

    def __init__(self, env):
        self.env = env.env if hasattr(env, "env") and hasattr(env.env, "sim") else env
        self.sim = self.env.sim
        m = self.sim.model
        self._geoms: dict[str, np.ndarray] = {}
        for name in list(self.env.objects_dict) + list(self.env.fixtures_dict):
            obj = self.env.get_object(name)
            root = m.body_name2id(obj.root_body)
            self._geoms[name] = np.array(_subtree_geoms(m, root), dtype=int)

    def body_pos(self, name) -> np.ndarray:
        obj = self.env.get_object(name)
        return np.array(self.sim.data.body_xpos[self.sim.model.body_name2id(obj.root_body)])

    def body_mat(self, name) -> np.ndarray:
        obj = self.env.get_object(name)
        return np.array(self.sim.data.body_xmat[self.sim.model.body_name2id(obj.root_body)]).reshape(3, 3)

    def world_box(self, name) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned world box (lo, hi) of the object's collision geoms."""
        d, m = self.sim.data, self.sim.model
        pts = []
        for g in self._geoms.get(name, []):
            c, h = m.geom_aabb[g][:3], m.geom_aabb[g][3:]
            R = d.geom_xmat[g].reshape(3, 3)
            corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * h + c
            pts.append(corners @ R.T + d.geom_xpos[g])
        if not pts:
            p = self.body_pos(name)
            return p - 0.02, p + 0.02
        pts = np.concatenate(pts)
        return pts.min(0), pts.max(0)

    def grasp_yaw(self, name) -> float:
        """Yaw of the closing direction: across the object's narrowest horizontal extent."""
        d, m = self.sim.data, self.sim.model
        R = self.body_mat(name)
        # extents of the geoms in the object's frame
        pos = self.body_pos(name)
        pts = []
        for g in self._geoms.get(name, []):
            c, h = m.geom_aabb[g][:3], m.geom_aabb[g][3:]
            Rg = d.geom_xmat[g].reshape(3, 3)
            corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * h + c
            pts.append(((corners @ Rg.T + d.geom_xpos[g]) - pos) @ R)
        if not pts:
            return 0.0
        pts = np.concatenate(pts)
        ext = pts.max(0) - pts.min(0)
        # the two body axes closest to horizontal
        horiz = np.argsort(np.abs(R[2, :]))[:2]
        a = min(horiz, key=lambda i: ext[i])
        v = R[:, a]
        return float(np.arctan2(v[1], v[0]))

    def geom_boxes(self, name) -> list[tuple[np.ndarray, np.ndarray]]:
        """World axis-aligned (lo, hi) box of each collision geom of the object."""
        d, m = self.sim.data, self.sim.model
        out = []
        for g in self._geoms.get(name, []):
            c, h = m.geom_aabb[g][:3], m.geom_aabb[g][3:]
            R = d.geom_xmat[g].reshape(3, 3)
            corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * h + c
            pts = corners @ R.T + d.geom_xpos[g]
            out.append((pts.min(0), pts.max(0)))
        return out

    def rim_grasp(self, name, max_width: float = 0.072):
        """Grasp across the rim wall of a wide, open-topped object (mug, bowl) that does not fit
        between the fingers: returns (xy of the wall, closing direction yaw, rim top z), or None
        when the object fits the gripper or is not hollow. The wall opposite a handle is used."""
        boxes = self.geom_boxes(name)
        if len(boxes) < 6:
            return None
        R = self.body_mat(name)
        if abs(R[2, 2]) < 0.9:  # lying on its side
            return None
        lo, hi = self.world_box(name)
        # narrowest horizontal extent in the object's own frame
        pos = self.body_pos(name)
        loc = np.concatenate([np.array([b[0], b[1]]) for b in boxes]) - pos
        ext = (loc @ R).max(0) - (loc @ R).min(0)
        if min(ext[0], ext[1]) <= max_width:
            return None
        cen = np.array([(b[0][:2] + b[1][:2]) / 2 for b in boxes])
        tops = np.array([b[1][2] for b in boxes])
        center = np.median(cen, axis=0)
        height = hi[2] - lo[2]
        # hollow: nothing at the center reaches the upper part of the object
        for (blo, bhi) in boxes:
            if np.all(blo[:2] - 0.005 <= center) and np.all(center <= bhi[:2] + 0.005) \
                    and bhi[2] > lo[2] + 0.5 * height:
                return None
        rad = np.linalg.norm(cen - center, axis=1)
        cand = np.where((tops >= hi[2] - 0.015) & (rad > 0.015) & (rad < 0.06))[0]
        if len(cand) == 0:
            return None
        far = int(np.argmax(rad))
        dirs = (cen[cand] - center) / rad[cand, None]
        if rad[far] > np.median(rad[cand]) + 0.01:  # a handle sticks out: grasp the opposite wall
            hdir = (cen[far] - center) / rad[far]
            score = dirs @ hdir
        else:  # no handle: the wall nearest the hand
            score = np.linalg.norm(cen[cand] - self.eef_pos()[:2], axis=1)
        i = int(cand[int(np.argmin(score))])
        d = (cen[i] - center) / rad[i]
        return cen[i], float(np.arctan2(d[1], d[0])), float(tops[i])

    def site_pos(self, name) -> np.ndarray | None:
        site = self.env.object_sites_dict.get(name)
        if site is None:
            return None
        return np.array(self.sim.data.get_site_xpos(site.name))

    def eef_pos(self) -> np.ndarray:
        r = self.env.robots[0]
        return np.array(self.sim.data.site_xpos[r.eef_site_id])

    def eef_mat(self) -> np.ndarray:
        r = self.env.robots[0]
        return np.array(self.sim.data.site_xmat[r.eef_site_id]).reshape(3, 3)

    def finger_axis(self) -> np.ndarray:
        """World direction between the finger pads (the closing axis)."""
        m, d = self.sim.model, self.sim.data
        names = [m.body_id2name(i) for i in range(m.nbody)]
        l = [i for i, n in enumerate(names) if n and n.endswith("leftfinger")]
        r = [i for i, n in enumerate(names) if n and n.endswith("rightfinger")]
        if l and r:
            v = d.body_xpos[l[0]] - d.body_xpos[r[0]]
            if np.linalg.norm(v) > 1e-6:
                return v / np.linalg.norm(v)
        return self.eef_mat()[:, 1]

    def gripper_width(self) -> float:
        r = self.env.robots[0]
        q = self.sim.data.qpos[r._ref_gripper_joint_pos_indexes]
        return float(np.abs(q).sum())


# ----------------------------------------------------------------------------------- expert


class ScriptedExpert:
    def __init__(self, env, cfg: ExpertConfig | None = None, seed: int = 0):
        self.env = env
        self.cfg = cfg or ExpertConfig()
        self.rng = np.random.default_rng(seed)
        self.view = SimView(env)
        self.inner = self.view.env
        noisy = self.cfg.jitter > 0 or self.cfg.action_noise > 0
        self.gain = self.cfg.speed * (self.rng.uniform(0.8, 1.2) if noisy else 1.0)
        self.actions: list[np.ndarray] = []
        self.states: list[np.ndarray] = []
        self.done = False
        self.steps = 0
        self.R_down = None
        self.finger_yaw0 = 0.0
        self.tilt: np.ndarray | None = None

    # -- low level
    def _success(self) -> bool:
        return bool(self.inner._check_success())

    def _step(self, a: np.ndarray) -> None:
        if self.steps >= self.cfg.max_steps or self.done:
            raise _Stop()
        a = np.clip(np.asarray(a, np.float64), -1, 1)
        self.states.append(self.inner.sim.get_state().flatten().copy())
        self.actions.append(a.copy())  # exactly what is stepped: a replay reproduces the states bit for bit
        self.inner.step(a)
        self.steps += 1
        if self._success():
            self.done = True
            raise _Stop()

    def _rot_action(self, yaw: float) -> np.ndarray:
        Rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        Rt = Rz @ self.R_down
        if self.tilt is not None:  # extra rotation (axis * angle) about the fingertips
            Rt = _axis_angle_to_rot(self.tilt) @ Rt
        err = _rot_to_axis_angle(Rt @ self.view.eef_mat().T)
        return np.clip(err / 0.5 * 1.5, -1, 1)

    def move(self, target, yaw, grip, tol=None, max_steps=120, jitter=True):
        target = np.array(target, dtype=float)
        if jitter and self.cfg.jitter > 0:
            target = target + self.rng.uniform(-1, 1, 3) * np.array([1, 1, 0.5]) * self.cfg.jitter
        tol = tol or self.cfg.pos_tol
        for _ in range(max_steps):
            err = target - self.view.eef_pos()
            rot = self._rot_action(yaw)
            if np.linalg.norm(err) < tol and np.abs(rot).max() < 0.1:
                return
            a = np.zeros(7)
            a[:3] = np.clip(err / 0.05 * 2.0 * self.gain, -1, 1)
            a[3:6] = rot
            if self.cfg.action_noise > 0:
                a[:6] += self.rng.normal(0, self.cfg.action_noise, 6)
            a[6] = grip
            self._step(a)

    def hold(self, yaw, grip, n):
        p = self.view.eef_pos()
        for _ in range(n):
            a = np.zeros(7)
            a[:3] = np.clip((p - self.view.eef_pos()) / 0.05 * 2.0, -1, 1)
            a[3:6] = self._rot_action(yaw)
            a[6] = grip
            self._step(a)

    # -- yaw: rotate the fingers' closing axis onto the wanted world direction (mod pi)
    def _yaw_for(self, closing_yaw: float) -> float:
        d = closing_yaw - self.finger_yaw0
        d = (d + np.pi / 2) % np.pi - np.pi / 2
        return float(d)

    # -- skills
    def pick(self, obj: str):
        v = self.view
        lo, hi = v.world_box(obj)
        c = (lo + hi) / 2
        height = hi[2] - lo[2]
        depth = min(self.cfg.grasp_depth, height / 2)
        # keep the fingertips off the table for flat objects
        gz_min = lo[2] + 0.004
        yaw = self._yaw_for(v.grasp_yaw(obj))
        gz = max(hi[2] - depth, gz_min)
        rim = v.rim_grasp(obj)
        if rim is not None:  # too wide for the fingers: one finger inside, one outside the wall
            (c[0], c[1]), ryaw, top = rim
            yaw = self._yaw_for(ryaw)
            gz = max(top - min(self.cfg.grasp_depth, height / 2), gz_min)
        self.move([c[0], c[1], hi[2] + 0.08], yaw, -1, tol=0.02)
        self.move([c[0], c[1], gz], yaw, -1, tol=0.008, jitter=False)
        self.hold(yaw, 1, 12)
        self.move([c[0], c[1], hi[2] + self.cfg.lift_height], yaw, 1, tol=0.03, jitter=False)
        return yaw, self.view.eef_pos()[2] - v.world_box(obj)[0][2]

    def place(self, obj: str, target_xy, target_top_z: float, yaw: float, carry_h: float):
        # carry_h: eef height above the object's bottom while held
        # LIBERO's predicates test the object's *body* position (On: within 3 cm of the target
        # object's body in xy; In: inside the region box), so steer the held object's body onto
        # the target, correcting for where in the hand it sits (re-measured as it settles)
        target_xy = np.asarray(target_xy, dtype=float)[:2]
        z_release = target_top_z + carry_h + self.cfg.release_clearance
        z_carry = max(z_release + 0.06, self.view.eef_pos()[2])
        # carry the object's bottom over everything standing near the target
        obj_bottom = self.view.eef_pos()[2] - carry_h
        for other in self.inner.objects_dict:
            if other == obj:
                continue
            olo, ohi = self.view.world_box(other)
            near = np.all(olo[:2] - 0.08 < target_xy) and np.all(target_xy < ohi[:2] + 0.08)
            if near and ohi[2] < obj_bottom + 0.25:
                z_carry = max(z_carry, ohi[2] + carry_h + 0.03)

        def eef_goal():
            off = self.view.body_pos(obj)[:2] - self.view.eef_pos()[:2]
            if np.linalg.norm(off) > 0.12:  # not plausibly in the hand: steer the hand itself
                off = np.zeros(2)
            return target_xy - off

        xy = eef_goal()
        self.move([xy[0], xy[1], z_carry], yaw, 1, tol=0.02)
        for _ in range(2):
            xy = eef_goal()
            self.move([xy[0], xy[1], z_carry], yaw, 1, tol=0.008, max_steps=40, jitter=False)
        xy = eef_goal()
        self.move([xy[0], xy[1], z_release + 0.02], yaw, 1, tol=0.008, jitter=False)
        xy = eef_goal()
        self.move([xy[0], xy[1], z_release], yaw, 1, tol=0.006, max_steps=40, jitter=False)
        self.hold(yaw, -1, 10)
        p = self.view.eef_pos()
        self.move([p[0], p[1], p[2] + 0.1], yaw, -1, tol=0.03, jitter=False)

    def _target(self, name: str):
        """(xy, top_z) of a placement target: region site or object."""
        site = self.view.site_pos(name)
        env = self.inner
        if name in env.objects_dict or name in env.fixtures_dict:
            lo, hi = self.view.world_box(name)
            p = self.view.body_pos(name)
            return p[:2], hi[2]
        if site is not None:
            s = env.object_sites_dict[name]
            # release from the region's center height (containers: above their rim and handle)
            top = site[2]
            xy = site[:2].copy()
            # a drawer's region: aim toward its open end, clear of the cabinet front above it
            m, d = env.sim.model, env.sim.data
            for jn in list(getattr(s, "joints", None) or [])[:1]:
                jid = m.joint_name2id(jn)
                lo_r, hi_r = m.jnt_range[jid]
                q_closed = hi_r if abs(hi_r) < abs(lo_r) else lo_r
                axis = d.body_xmat[m.jnt_bodyid[jid]].reshape(3, 3) @ m.jnt_axis[jid]
                opening = -axis[:2] * np.sign(q_closed - (lo_r + hi_r - q_closed))
                if np.linalg.norm(opening) > 1e-6:
                    xy = xy + opening / np.linalg.norm(opening) * 0.025
            return xy, top
        raise KeyError(f"placement target {name!r} is neither a site nor an object")

    def _slots(self, goals) -> dict[int, np.ndarray]:
        """xy offsets from a shared ``On`` region's center when several objects go onto it (two
        moka pots on the stove): spread them side by side across their narrow axes."""
        env, v = self.inner, self.view
        groups: dict[str, list[int]] = {}
        for i, g in enumerate(goals):
            if g[0].lower() == "on" and len(g) > 2 and g[2] in env.object_sites_dict:
                groups.setdefault(g[2], []).append(i)
        out = {}
        for region, idx in groups.items():
            if len(idx) < 2:
                continue
            size = np.abs(np.array(getattr(env.object_sites_dict[region], "size", [0, 0, 0]), dtype=float))
            ang = np.array([v.grasp_yaw(goals[i][1]) for i in idx])
            u = np.array([np.cos(2 * ang).mean(), np.sin(2 * ang).mean()])
            a = 0.5 * np.arctan2(u[1], u[0]) if np.linalg.norm(u) > 1e-3 else np.pi / 2
            u = np.array([np.cos(a), np.sin(a)])
            reach = abs(u[0]) * size[0] + abs(u[1]) * size[1]  # region half-extent along u
            half = min(0.048 * (len(idx) - 1), max(reach - 0.025, 0.0))
            for k, i in enumerate(idx):
                out[i] = u * np.linspace(-half, half, len(idx))[k]
        return out

    def _body_geom_corners(self, body: int) -> list[tuple[int, np.ndarray]]:
        """(geom id, its 8 world-frame box corners) of every colliding geom in ``body``'s subtree."""
        m, d = self.inner.sim.model, self.inner.sim.data
        out = []
        for g in _subtree_geoms(m, body):
            c, h = m.geom_aabb[g][:3], m.geom_aabb[g][3:]
            corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * h + c
            out.append((g, corners @ d.geom_xmat[g].reshape(3, 3).T + d.geom_xpos[g]))
        return out

    def _region_joints(self, region: str, verb: str):
        """(joint id, qpos, body, world axis, range low, range high) of each joint of an articulated
        region (a drawer's slide); unsupported when the region has none."""
        site_obj = self.inner.object_sites_dict.get(region)
        joints = list(getattr(site_obj, "joints", None) or [])
        if not joints:
            raise _Unsupported(f"{verb} {region}: region has no joint")
        m, d = self.inner.sim.model, self.inner.sim.data
        for jn in joints:
            jid = m.joint_name2id(jn)
            body = m.jnt_bodyid[jid]
            lo_r, hi_r = m.jnt_range[jid]
            yield (jid, float(d.qpos[m.jnt_qposadr[jid]]), body,
                   d.body_xmat[body].reshape(3, 3) @ m.jnt_axis[jid], lo_r, hi_r)

    def open_drawer(self, region: str):
        """Pull the region's drawer open along its slide joint by its handle: the drawer geom that
        stands out farthest in the opening direction, grasped top-down with the fingers closing
        along the pull, then pulled to the end of the joint's range and released."""
        d = self.inner.sim.data
        for _, q, body, axis, lo_r, hi_r in self._region_joints(region, "Open"):
            q_goal = lo_r if abs(lo_r) > abs(hi_r) else hi_r   # the open end: the long side of the range
            travel = q_goal - q   # the whole range (LIBERO's Open needs ~90% of it), against the end stop
            if abs(travel) < 0.01:
                continue
            dvec = axis * np.sign(travel)
            dvec[2] = 0.0
            dvec /= max(np.linalg.norm(dvec), 1e-6)
            geoms = self._body_geom_corners(body)
            if not geoms:
                raise _Unsupported(f"Open {region}: drawer body has no geoms")
            g, corners = max(geoms, key=lambda gc: float(d.geom_xpos[gc[0]] @ dvec))   # the handle
            lo, hi = corners.min(0), corners.max(0)
            c = (lo + hi) / 2
            yaw = self._yaw_for(float(np.arctan2(dvec[1], dvec[0])))   # fingers close along the pull
            self.move([c[0], c[1], max(c[2] + 0.1, self.view.eef_pos()[2])], yaw, -1, tol=0.02)
            self.move([c[0], c[1], c[2] - 0.005], yaw, -1, tol=0.008, jitter=False)
            self.hold(yaw, 1, 15)
            end = c + dvec * (abs(travel) + 0.03)
            self.move([end[0], end[1], c[2]], yaw, 1, tol=0.01, max_steps=150, jitter=False)
            self.hold(yaw, -1, 10)
            p = self.view.eef_pos()
            self.move([p[0], p[1], p[2] + 0.08], yaw, -1, tol=0.02, max_steps=40, jitter=False)

    def close_drawer(self, region: str):
        """Push the region's drawer shut along its slide joint with the closed fingertips, from
        just in front of the drawer's front panel (top edge)."""
        m, d = self.inner.sim.model, self.inner.sim.data
        for _, q, body, axis, lo_r, hi_r in self._region_joints(region, "Close"):
            # closed end of the range: LIBERO drawers close at the top of the range (qpos > 0)
            q_goal = hi_r if abs(hi_r) < abs(lo_r) else lo_r
            travel = q_goal - q
            if abs(travel) < 0.003:
                continue
            dvec = axis * np.sign(travel)
            dvec[2] = 0.0
            dvec /= max(np.linalg.norm(dvec), 1e-6)
            pts = [p for _, p in self._body_geom_corners(body)]   # the drawer's own geoms
            if not pts:
                raise _Unsupported(f"Close {region}: drawer body has no geoms")
            pts = np.concatenate(pts)
            lo, hi = pts.min(0), pts.max(0)
            c = (lo + hi) / 2
            front = c - dvec * (np.abs(dvec) @ ((hi - lo) / 2))  # the front panel's face
            z = hi[2] - 0.015
            # push near the panel's end closest to the robot base: the forearm then stays clear
            # of the cabinet's top when the hand reaches low and far (the slide is prismatic,
            # so where along the panel it is pushed does not matter)
            perp = np.array([-dvec[1], dvec[0], 0.0])
            base = np.array(self.inner.robots[0].base_pos if hasattr(self.inner.robots[0], "base_pos")
                            else d.body_xpos[m.body_name2id(self.inner.robots[0].robot_model.root_body)])
            side = np.sign(perp[:2] @ (base[:2] - front[:2])) or 1.0
            front = front + perp * side * max(np.abs(perp) @ ((hi - lo) / 2) - self.cfg.drawer_edge, 0.0)
            # fingers side by side across the push: the wide hand stays clear of the cabinet face
            yaw = self._yaw_for(float(np.arctan2(dvec[1], dvec[0])) + np.pi / 2)
            start = front - dvec * 0.06
            self.move([start[0], start[1], max(z + 0.1, self.view.eef_pos()[2])], yaw, 1, tol=0.02)
            self.move([start[0], start[1], z], yaw, 1, tol=0.01, jitter=False)
            end = front + dvec * (abs(travel) + 0.04)
            # fingertips lead, tilted toward the push, so the hand stays off the cabinet face above
            self.tilt = np.cross([0.0, 0.0, -1.0], dvec) * self.cfg.push_tilt
            try:
                self.move([start[0], start[1], z], yaw, 1, tol=0.01, max_steps=30, jitter=False)
                self.move([end[0], end[1], z], yaw, 1, tol=0.01, max_steps=100, jitter=False)
                p = self.view.eef_pos()
                back = p - dvec * 0.05
                self.move([back[0], back[1], p[2] + 0.05], yaw, 1, tol=0.02, max_steps=40, jitter=False)
            finally:
                self.tilt = None

    def _knob(self, obj: str):
        """(joint id, its qpos, axis point, vertical axis sign, grip direction) of ``obj``'s hinge knob:
        the grip direction is the horizontal unit vector from the axis to the knob geom that lies
        farthest from it among those that stand up above the dial (the pointer the finger pushes)."""
        m, d = self.inner.sim.model, self.inner.sim.data
        names = list(getattr(self.inner.get_object(obj), "joints", None) or [])
        jids = []
        for jn in names:
            for cand in (jn, f"{obj}_{jn}"):
                try:
                    jids.append(m.joint_name2id(cand))
                    break
                except Exception:
                    continue
        jids = [j for j in jids if m.jnt_type[j] == 3]   # hinge
        if not jids:
            raise _Unsupported(f"Turn {obj}: no hinge joint among {names}")
        jid = jids[0]
        body = m.jnt_bodyid[jid]
        axis = d.body_xmat[body].reshape(3, 3) @ m.jnt_axis[jid]
        if abs(axis[2]) < 0.9:
            raise _Unsupported(f"Turn {obj}: knob axis {np.round(axis, 2)} is not vertical")
        centre = d.xanchor[jid].copy()
        geoms = self._body_geom_corners(body)
        tops = [(g, c) for g, c in geoms if c[:, 2].max() > centre[2] + 0.02] or geoms
        def radial(gc):
            v = gc[1].mean(0) - centre
            return float(np.hypot(v[0], v[1]))
        _, corners = max(tops, key=radial)
        u = corners.mean(0) - centre
        u[2] = 0.0
        u /= max(np.linalg.norm(u), 1e-6)
        top = max(c[:, 2].max() for _, c in tops)
        return jid, float(d.qpos[m.jnt_qposadr[jid]]), centre, float(np.sign(axis[2])), u, top

    def turn_knob(self, obj: str, on: bool, tries: int = 3):
        """Turn ``obj``'s knob (a hinge about the vertical) on or off: the closed fingertips come down
        beside its pointer and sweep along an arc about the knob's axis, pushing the pointer round
        (on: towards the top of the joint range, where LIBERO's TurnOn holds; off: back below 0).
        A sweep that leaves the knob short (the fingertips rode over the pointer) is repeated from
        where the pointer now stands."""
        m = self.inner.sim.model
        for _ in range(tries):
            jid, q, centre, sign, u, top = self._knob(obj)
            lo_r, hi_r = m.jnt_range[jid]
            dq = (min(hi_r, 1.1) - q) if on else (lo_r - q)   # the turn still needed, in joint angle
            if (on and q >= 0.6) or (not on and q <= lo_r + 0.002):
                return
            self._sweep_knob(centre, u, top, sign * dq)     # seen from above: a downward axis flips it

    def _sweep_knob(self, centre, u, top, world_turn: float):
        theta_u = float(np.arctan2(u[1], u[0]))
        r, z = self.cfg.knob_radius, top - self.cfg.knob_depth
        behind = -np.sign(world_turn) * self.cfg.knob_behind   # start behind the pointer
        arc = np.linspace(theta_u + behind, theta_u + world_turn + np.sign(world_turn) * 0.5, 12)
        pts = [centre[:2] + r * np.array([np.cos(a), np.sin(a)]) for a in arc]
        # fingers side by side along the radius where the sweep starts (the hand clear of the pointer)
        yaw = self._yaw_for(float(arc[0]))
        p0 = pts[0]
        self.move([p0[0], p0[1], max(z + 0.08, self.view.eef_pos()[2])], yaw, 1, tol=0.015)
        self.move([p0[0], p0[1], z], yaw, 1, tol=0.008, jitter=False, max_steps=60)
        for p in pts[1:]:
            self.move([p[0], p[1], z], yaw, 1, tol=0.004, max_steps=25, jitter=False)
        e = self.view.eef_pos()
        self.move([e[0], e[1], z + 0.08], yaw, 1, tol=0.02, max_steps=30, jitter=False)

    def run(self) -> list[str]:
        env = self.inner
        self.R_down = self.view.eef_mat()
        fa = self.view.finger_axis()
        self.finger_yaw0 = float(np.arctan2(fa[1], fa[0]))
        goals = env.parsed_problem["goal_state"]
        done_skills = []
        # open drawers first and close them after everything that goes into them has been placed
        goals = sorted(goals, key=lambda g: {"open": 0, "close": 2}.get(g[0].lower(), 1))
        slots = self._slots(goals)
        try:
            for gi, g in enumerate(goals):
                if env._eval_predicate(g):
                    continue
                kind = g[0].lower()
                if kind in ("on", "in"):
                    for _try in range(3):  # re-grasp when the object did not come up
                        z0 = self.view.world_box(g[1])[0][2]
                        yaw, carry_h = self.pick(g[1])
                        if self.view.world_box(g[1])[0][2] > z0 + 0.04:
                            break
                        self.hold(yaw, -1, 8)
                    xy, top = self._target(g[2])
                    xy = np.asarray(xy, dtype=float) + slots.get(gi, 0.0)
                    self.place(g[1], xy, top, yaw, carry_h)
                elif kind == "close":
                    self.close_drawer(g[1])
                elif kind == "open":
                    self.open_drawer(g[1])
                elif kind in ("turnon", "turnoff"):
                    self.turn_knob(g[1], on=kind == "turnon")
                else:
                    raise _Unsupported(f"predicate {g}")
                done_skills.append(kind)
            self.hold(0.0, -1, 5)
        except _Stop:
            pass
        return done_skills


class _Stop(Exception):
    pass


class _Unsupported(Exception):
    pass


def run_episode(env, init_state: np.ndarray | None, cfg: ExpertConfig | None = None, seed: int = 0,
                settle_steps: int = 5) -> EpisodeResult:
    """One scripted episode from ``init_state`` (env without rendering is fine); with
    ``init_state=None`` from the env's current scene (the caller restored it, e.g.
    ``LiberoEnv.reset(scene)``). The first ``settle_steps`` actions are no-ops (gripper open) while
    objects settle, as LIBERO's evaluation and its recorded demos do; they are recorded like the
    others (LIBERO's dataset script drops them)."""
    if init_state is not None:
        env.reset()
        env.set_init_state(init_state)
    ex = ScriptedExpert(env, cfg, seed)
    err = ""
    try:
        for _ in range(settle_steps):
            ex._step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
        skills = ex.run()
    except _Stop:
        skills = []
    except _Unsupported as e:
        skills, err = [], f"unsupported: {e}"
    success = bool(ex.inner._check_success())
    return EpisodeResult(success=success, steps=ex.steps,
                         actions=np.array(ex.actions, dtype=np.float64).reshape(-1, 7),
                         states=np.array(ex.states), final_state=ex.inner.sim.get_state().flatten().copy(),
                         skills=skills, error=err)
