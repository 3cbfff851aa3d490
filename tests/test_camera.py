import numpy as np
import pybullet as p

from datasets_build.camera import CameraModel


def _look_at():
    return CameraModel.from_look_at(
        eye=[1.0, 0.0, 1.0], target=[0.0, 0.0, 0.0], up=[0, 0, 1], fov_deg=60.0, width=224, height=224
    )


def test_target_projects_to_image_centre():
    cam = _look_at()
    uv, z = cam.project(np.array([[0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(uv[0], [112, 112], atol=1e-6)
    np.testing.assert_allclose(z[0], np.sqrt(2), atol=1e-9)


def test_up_is_up_and_right_is_right():
    cam = _look_at()
    uv, _ = cam.project(np.array([[0.0, 0.0, 0.2], [0.0, 0.2, 0.0]]))
    assert uv[0, 1] < 112  # higher in the world -> smaller row
    # looking along -x from +x with z up: world +y is on the image right
    assert uv[1, 0] > 112


def test_unproject_inverts_project():
    cam = _look_at()
    pts = np.array([[0.1, 0.05, 0.02], [-0.2, 0.1, 0.3]])
    uv, z = cam.project(pts)
    depth = np.zeros((224, 224))
    for (u, v), d in zip(uv, z, strict=True):
        depth[int(v), int(u)] = d
    back = cam.unproject(depth, uv)
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_from_opengl_matches_pybullet_matrices_and_look_at():
    eye, target, up, fov = [1.0, 0.3, 0.8], [0.0, 0.0, 0.1], [0, 0, 1], 50.0
    view = p.computeViewMatrix(eye, target, up)
    proj = p.computeProjectionMatrixFOV(fov, 1.0, 0.01, 10.0)
    gl = CameraModel.from_opengl(view, proj, 200, 200)
    la = CameraModel.from_look_at(eye, target, up, fov, 200, 200)
    np.testing.assert_allclose(gl.intrinsics, la.intrinsics, atol=1e-4)
    np.testing.assert_allclose(gl.extrinsics, la.extrinsics, atol=1e-5)
    # OpenGL clip-space projection of a point agrees with the pinhole model
    pt = np.array([0.05, -0.1, 0.2, 1.0])
    v = np.asarray(view).reshape(4, 4).T
    pr = np.asarray(proj).reshape(4, 4).T
    clip = pr @ v @ pt
    ndc = clip[:3] / clip[3]
    u_gl, v_gl = (ndc[0] + 1) / 2 * 200, (1 - (ndc[1] + 1) / 2) * 200
    uv, _ = gl.project(pt[None, :3])
    np.testing.assert_allclose(uv[0], [u_gl, v_gl], atol=1e-4)


def test_calvin_static_camera_focal_length():
    # formats.md: fov 10 deg over 200 px -> f = 100 / tan(5 deg) = 1143.0 px
    cam = CameraModel.from_look_at(
        [2.871459, -2.166602, 2.555160], [-0.026242, -0.030233, 0.392000], [0.404140, 0.226298, 0.886262], 10, 200, 200
    )
    np.testing.assert_allclose(cam.intrinsics[0, 0], 1143.0, atol=0.1)


def test_dict_round_trip():
    cam = _look_at()
    again = CameraModel.from_dict(cam.to_dict())
    np.testing.assert_array_equal(again.intrinsics, cam.intrinsics)
    np.testing.assert_array_equal(again.extrinsics, cam.extrinsics)
