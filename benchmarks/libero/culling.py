"""Pixel-identical frustum culling for robosuite's offscreen camera renders.

On a CPU (Mesa llvmpipe) a LIBERO camera frame costs time in proportion to the mesh faces the
renderer is given (~312k in a LIBERO scene; 128 px frames take 60-90 ms, 2 ms without the
meshes), and MuJoCo hands every geom of the scene to OpenGL whether the camera sees it or not.
The eye-in-hand camera sees a small part of the scene, so about 40% of the faces it is given
lie wholly outside its view frustum.

:func:`install` replaces ``render`` of one robosuite render context with the same sequence
(``mjv_updateScene`` then ``mjr_render``) plus one step between the two: every model geom whose
bounding sphere (MuJoCo's ``geom_rbound``) or bounding box (``geom_aabb``, in the geom's frame), each
with a margin, lies wholly outside the frustum of the camera being rendered is set to ``mjGEOM_NONE`` in the scene, in place, so the order of the
remaining geoms is unchanged. A geom outside the frustum produces no fragment in the view, so the
image is the same, bit for bit, unless something makes off-screen geometry visible. Culling is
therefore off (and robosuite's own render used) when the scene

* has a light casting shadows (an off-screen geom can shade the view),
* renders segmentation, stereo, or applies a model transform;

and nothing is culled in a frame where a reflective plane or box is in view (MuJoCo renders the
mirrored scene, off-screen geoms included, into the mirror's pixels).

``tests/test_culling.py`` checks identity on tasks of the three LIBERO scene families, on both
cameras, in several robot poses.
"""
from __future__ import annotations

from typing import Any

import numpy as np

MARGIN_SCALE = 1.02   # bounding-sphere margin: radius * scale + pad (m)
MARGIN_PAD = 0.002


def _mujoco():
    import mujoco

    return mujoco


def _reflective(m: Any) -> np.ndarray:
    """Geom ids MuJoCo renders a mirrored scene for (planes and boxes with a reflective material)."""
    mujoco = _mujoco()
    mat = m.geom_matid
    kinds = np.isin(m.geom_type, [mujoco.mjtGeom.mjGEOM_PLANE, mujoco.mjtGeom.mjGEOM_BOX]) & (mat >= 0)
    ids = np.flatnonzero(kinds)
    return ids[m.mat_reflectance[mat[ids]] > 0]


def unsafe_reason(m: Any, scn: Any) -> str | None:
    """Why culling could change the image of this model/scene (None: it cannot)."""
    mujoco = _mujoco()
    if scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] and m.nlight and np.any(m.light_castshadow):
        return "a light casts shadows"
    if scn.stereo != mujoco.mjtStereo.mjSTEREO_NONE:
        return "stereo rendering"
    if scn.enabletransform:
        return "a model transform"
    return None


def cull(m: Any, scn: Any, aspect: float, reflective: np.ndarray | None = None) -> int:
    """Set scene geoms wholly outside the camera frustum to mjGEOM_NONE; returns how many.

    A mirror (``reflective`` geom ids, see :func:`_reflective`) shows the scene mirrored, off-screen
    geoms included, wherever the mirror itself is visible: when one is in the frustum nothing is
    culled in this frame (a mirror outside the frustum shows nothing)."""
    mujoco = _mujoco()
    # mono rendering views from the average of the two eye cameras (which sit +-ipd/2 apart)
    cam = mujoco.mjv_averageCamera(scn.camera[0], scn.camera[1])
    if cam.orthographic:
        return 0
    pos = np.asarray(cam.pos, dtype=np.float64)
    fwd = np.asarray(cam.forward, dtype=np.float64)
    fwd /= np.linalg.norm(fwd)
    up = np.asarray(cam.up, dtype=np.float64)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    near = float(cam.frustum_near)
    c = float(cam.frustum_center)
    hw = float(cam.frustum_width) or 0.5 * aspect * (float(cam.frustum_top) - float(cam.frustum_bottom))
    # inward normals of the four side planes in camera coordinates (x right, y up, z forward)
    planes = np.array([[near, 0.0, -(c - hw)], [-near, 0.0, c + hw],
                       [0.0, near, -float(cam.frustum_bottom)], [0.0, -near, float(cam.frustum_top)]])
    planes /= np.linalg.norm(planes, axis=1, keepdims=True)
    basis = np.stack([right, up, fwd])
    geom_obj = mujoco.mjtObj.mjOBJ_GEOM
    none = mujoco.mjtGeom.mjGEOM_NONE
    rbound, aabb = m.geom_rbound, m.geom_aabb
    mirrors = set() if reflective is None else {int(i) for i in reflective}
    out = []
    for i in range(scn.ngeom):
        g = scn.geoms[i]
        if g.objtype != geom_obj or g.type == none:
            continue
        r = float(rbound[g.objid])
        outside = False
        if r > 0.0:  # planes (infinite) and anything without a bound stay
            center = basis @ (np.asarray(g.pos, dtype=np.float64) - pos)
            outside = _outside(center, r * MARGIN_SCALE + MARGIN_PAD, near, planes)
            if not outside:  # the sphere reaches into the view: try the geom's box (tighter for long meshes)
                box = aabb[g.objid]
                rot = basis @ np.asarray(g.mat, dtype=np.float64).reshape(3, 3)
                corners = center + (box[:3] + _SIGNS * (box[3:] * MARGIN_SCALE + MARGIN_PAD)) @ rot.T
                outside = bool(np.all(corners[:, 2] < near) or np.any(np.all(corners @ planes.T < 0.0, axis=0)))
        if outside:
            out.append(g)
        elif g.objid in mirrors:
            return 0
    for g in out:
        g.type = none
    return len(out)


_SIGNS = np.array([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])


def _outside(center: np.ndarray, r: float, near: float, planes: np.ndarray) -> bool:
    return bool(center[2] < near - r or np.any(planes @ center < -r))


def install(ctx: Any) -> bool:
    """Give one robosuite ``MjRenderContext`` the culling render (idempotent). Returns whether
    culling is active for it (False: the model is not safe to cull, see :func:`unsafe_reason`)."""
    if getattr(ctx, "_uwm_culling", None) is not None:
        return ctx._uwm_culling
    mujoco = _mujoco()
    m = ctx.model._model
    own = type(ctx).render
    safe = unsafe_reason(m, ctx.scn) is None
    reflective = _reflective(m)
    ctx._uwm_culling = safe
    ctx.culled = 0  # geoms culled by this context, cumulative (a check)
    if not safe:
        return False

    def render(width, height, camera_id=None, segmentation=False):
        if segmentation:
            return own(ctx, width, height, camera_id=camera_id, segmentation=segmentation)
        # robosuite's render up to mjv_updateScene (buffer size, camera), unchanged
        if width > ctx.con.offWidth or height > ctx.con.offHeight:
            ctx.update_offscreen_size(max(width, ctx.model.vis.global_.offwidth),
                                      max(height, ctx.model.vis.global_.offheight))
        if camera_id is not None:
            ctx.cam.type = mujoco.mjtCamera.mjCAMERA_FREE if camera_id == -1 else mujoco.mjtCamera.mjCAMERA_FIXED
            ctx.cam.fixedcamid = camera_id
        mujoco.mjv_updateScene(m, ctx.data._data, ctx.vopt, ctx.pert, ctx.cam, mujoco.mjtCatBit.mjCAT_ALL, ctx.scn)
        if unsafe_reason(m, ctx.scn) is None:  # flags can be changed between renders
            mirrors = reflective if ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] else None
            ctx.culled += cull(m, ctx.scn, width / height, mirrors)
        mujoco.mjr_render(viewport=mujoco.MjrRect(0, 0, width, height), scn=ctx.scn, con=ctx.con)

    ctx.render = render
    return True


__all__ = ["cull", "install", "unsafe_reason"]
