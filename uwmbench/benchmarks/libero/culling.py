"""Pixel-identical frustum culling for robosuite's offscreen camera renders.

On a CPU (Mesa llvmpipe) a LIBERO camera frame costs time in proportion to the mesh faces the
renderer is given (~312k in a LIBERO scene; 128 px frames take 60-90 ms, 2 ms without the
meshes), and MuJoCo hands every geom of the scene to OpenGL whether the camera sees it or not.
The eye-in-hand camera sees a small part of the scene, so about 40% of the faces it is given
lie wholly outside its view frustum.

:func:`install` replaces ``render`` of one robosuite render context with the same sequence
(``mjv_updateScene`` then ``mjr_render``) plus one step between the two: every model geom whose
bounding sphere (MuJoCo's ``geom_rbound``), bounding box (``geom_aabb``, in the geom's frame) or, for big
meshes, convex hull (its vertices), each with a margin, lies wholly outside the frustum of the
camera being rendered is set to ``mjGEOM_NONE`` in the scene, in place, so the order of the
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

from typing import Any, Callable

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


HULL_MIN_FACES = 2000  # meshes this big get a third, exact test on their convex hull's vertices


def mesh_hulls(m: Any) -> dict[int, np.ndarray]:
    """{mesh id: its convex hull's vertices (geom frame)} for meshes of at least HULL_MIN_FACES faces.
    A long or L-shaped mesh (a floor lamp) often has a bounding box that reaches into the view
    while no part of the mesh does; its hull does not."""
    from scipy.spatial import ConvexHull, QhullError

    hulls = {}
    for mid in np.flatnonzero(m.mesh_facenum >= HULL_MIN_FACES):
        a, n = int(m.mesh_vertadr[mid]), int(m.mesh_vertnum[mid])
        v = np.asarray(m.mesh_vert[a:a + n], dtype=np.float64)
        try:
            hulls[int(mid)] = v[ConvexHull(v).vertices]
        except QhullError:  # flat or degenerate: every vertex is its own hull
            hulls[int(mid)] = v
    return hulls


def cull(m: Any, scn: Any, aspect: float, reflective: np.ndarray | None = None,
         hulls: dict[int, np.ndarray] | None = None, cache: dict | None = None) -> int:
    """Set scene geoms wholly outside the camera frustum to mjGEOM_NONE; returns how many.

    Tests, each conservative and tried only when the previous one fails: bounding sphere, bounding
    box, and for big meshes on static bodies (``hulls``) the convex hull, whose verdict is kept in
    ``cache`` while neither the camera nor the geom moves (a fixed camera decides once per scene).
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
    geom_obj = int(mujoco.mjtObj.mjOBJ_GEOM)
    none, mesh = int(mujoco.mjtGeom.mjGEOM_NONE), int(mujoco.mjtGeom.mjGEOM_MESH)

    geoms = [scn.geoms[i] for i in range(scn.ngeom)]
    idx = [i for i, g in enumerate(geoms) if g.objtype == geom_obj and g.type != none]
    if not idx:
        return 0
    ids = np.array([geoms[i].objid for i in idx])
    gpos = np.array([geoms[i].pos for i in idx], dtype=np.float64)
    gmat = np.array([geoms[i].mat for i in idx], dtype=np.float64).reshape(-1, 3, 3)
    r = m.geom_rbound[ids]
    bounded = r > 0.0  # planes (infinite) and anything without a bound stay
    center = (gpos - pos) @ basis.T                                   # (n, 3) camera frame
    rs = r * MARGIN_SCALE + MARGIN_PAD
    outside = bounded & ((center[:, 2] < near - rs) | np.any(center @ planes.T < -rs[:, None], axis=1))
    # boxes of the rest: corners in the camera frame, all beyond one plane
    todo = np.flatnonzero(bounded & ~outside)
    if todo.size:
        box = m.geom_aabb[ids[todo]]                                  # (k, 6) center, half sizes
        rot = np.einsum("ij,kjl->kil", basis, gmat[todo])             # geom -> camera rotation
        local = box[:, None, :3] + _SIGNS[None] * (box[:, None, 3:] * MARGIN_SCALE + MARGIN_PAD)
        corners = center[todo, None, :] + np.einsum("kcj,kij->kci", local, rot)
        beyond = (corners[..., 2] < near).all(axis=1) | (corners @ planes.T < 0.0).all(axis=1).any(axis=1)
        outside[todo[beyond]] = True
        if hulls:
            static = m.body_weldid[m.geom_bodyid[ids]] == 0
            key_cam = np.concatenate([pos, fwd, up, planes.ravel()]).tobytes()
            for k in np.flatnonzero(~beyond):
                j = todo[k]
                gid = int(ids[j])
                if geoms[idx[j]].type != mesh or not static[j]:
                    continue
                hull = hulls.get(int(m.geom_dataid[gid]))
                if hull is None:
                    continue
                key = key_cam + gpos[j].tobytes() + gmat[j].tobytes()
                hit = None if cache is None else cache.get(gid)
                if hit is not None and hit[0] == key:
                    outside[j] = hit[1]
                    continue
                pts = center[j] + hull @ rot[k].T
                verdict = bool((pts[:, 2] < near - MARGIN_PAD).all()
                               or (pts @ planes.T < -MARGIN_PAD).all(axis=0).any())
                outside[j] = verdict
                if cache is not None:
                    cache[gid] = (key, verdict)
    if reflective is not None and len(reflective) and np.isin(ids[~outside], reflective).any():
        return 0
    for j in np.flatnonzero(outside):
        geoms[idx[j]].type = none
    return int(outside.sum())


_SIGNS = np.array([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])


def install(ctx: Any, hulls: "dict[int, np.ndarray] | Callable[[], dict[int, np.ndarray]] | None" = None) -> bool:
    """Give one robosuite ``MjRenderContext`` the culling render (idempotent). Returns whether
    culling is active for it (False: the model is not safe to cull, see :func:`unsafe_reason`).
    ``hulls``: the model's :func:`mesh_hulls` (or a function returning them, called only when
    culling is safe), e.g. from the model cache; computed here when not given."""
    if getattr(ctx, "_uwm_culling", None) is not None:
        return ctx._uwm_culling
    mujoco = _mujoco()
    m = ctx.model._model
    own = type(ctx).render
    safe = unsafe_reason(m, ctx.scn) is None
    reflective = _reflective(m)
    if not safe:
        hulls = None
    elif hulls is None:
        hulls = mesh_hulls(m)
    elif callable(hulls):
        hulls = hulls()
    cache: dict = {}
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
            ctx.culled += cull(m, ctx.scn, width / height, mirrors, hulls, cache)
        mujoco.mjr_render(viewport=mujoco.MjrRect(0, 0, width, height), scn=ctx.scn, con=ctx.con)

    ctx.render = render
    return True


__all__ = ["cull", "install", "unsafe_reason"]
