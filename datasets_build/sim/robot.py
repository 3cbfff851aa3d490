"""The Franka Panda of the demo sim: joint bookkeeping, TCP pose, IK targets and the gripper.

Kept apart from the scene so that the env's action interface has one place that knows the robot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet as p

ARM_JOINTS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
FINGER_JOINTS: tuple[int, ...] = (9, 10)
HAND_LINK = 8
TCP_LINK = 11  # panda_grasptarget: between the fingertips, 0.105 m below the hand
FINGER_LINKS: tuple[int, ...] = (9, 10)
FINGER_OPEN = 0.04  # per finger, metres (full opening 0.08)
FINGER_CLOSED = 0.0
NUM_DOFS = 9  # 7 arm joints + 2 fingers: the length pybullet's IK works with

_LOWER = (-2.9671, -1.8326, -2.9671, -3.1416, -2.9671, -0.0873, -2.9671, 0.0, 0.0)
_UPPER = (2.9671, 1.8326, 2.9671, 0.0, 2.9671, 3.8223, 2.9671, 0.04, 0.04)
_NOMINAL = (0.0, -0.25, 0.0, -2.3, 0.0, 2.05, np.pi / 4, FINGER_OPEN, FINGER_OPEN)


@dataclass(frozen=True)
class RobotConfig:
    """Motor strengths and IK settings; defaults track a 3 cm step within ~1 mm in 0.1 s."""

    arm_force: float = 200.0  # N·m per arm joint (stiff, so the arm tracks under contact)
    arm_position_gain: float = 0.3
    finger_force: float = 40.0  # N per finger
    ik_iterations: int = 100
    ik_threshold: float = 1e-5


class Panda:
    """A loaded Panda body in one pybullet client, commanded by TCP pose targets."""

    def __init__(self, client: int, body: int, config: RobotConfig) -> None:
        self.client = client
        self.body = body
        self.config = config
        self._rest = list(_NOMINAL)
        self._couple_fingers()

    def _couple_fingers(self) -> None:
        """Gear the two fingers together (mirror motion). Without it a squeezed block slides freely
        along the closing axis, because both fingers saturate at their force limit."""
        gear = p.createConstraint(
            self.body,
            FINGER_JOINTS[0],
            self.body,
            FINGER_JOINTS[1],
            jointType=p.JOINT_GEAR,
            jointAxis=[1, 0, 0],
            parentFramePosition=[0, 0, 0],
            childFramePosition=[0, 0, 0],
            physicsClientId=self.client,
        )
        p.changeConstraint(gear, gearRatio=-1, erp=0.1, maxForce=50, physicsClientId=self.client)

    def reset_joints(self, arm: np.ndarray | None = None, gripper_open: bool = True) -> None:
        """Teleport the joints (no physics) to `arm` (7,) or the nominal pose, fingers open/closed."""
        q = list(_NOMINAL[:7]) if arm is None else [float(v) for v in arm]
        finger = FINGER_OPEN if gripper_open else FINGER_CLOSED
        for joint, value in zip(ARM_JOINTS, q, strict=True):
            p.resetJointState(self.body, joint, value, physicsClientId=self.client)
        for joint in FINGER_JOINTS:
            p.resetJointState(self.body, joint, finger, physicsClientId=self.client)
        self.command_arm(np.asarray(q))
        self.command_gripper(gripper_open)

    def teleport_tcp(self, position: np.ndarray, orientation: np.ndarray, gripper_open: bool = True) -> None:
        """Put the TCP at a pose by IK and joint resets (no physics), and hold it there."""
        self.reset_joints(gripper_open=gripper_open)
        for _ in range(5):  # IK from the new joints each time: converges to well under a millimetre
            self.reset_joints(self.solve_ik(position, orientation), gripper_open=gripper_open)

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """TCP position (3,) and orientation quaternion xyzw (4,) in the world frame."""
        state = p.getLinkState(self.body, TCP_LINK, computeForwardKinematics=True, physicsClientId=self.client)
        return np.asarray(state[4], dtype=np.float64), np.asarray(state[5], dtype=np.float64)

    def hand_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Hand link position and orientation (where the wrist camera is mounted)."""
        state = p.getLinkState(self.body, HAND_LINK, computeForwardKinematics=True, physicsClientId=self.client)
        return np.asarray(state[4], dtype=np.float64), np.asarray(state[5], dtype=np.float64)

    def arm_joints(self) -> np.ndarray:
        """Current arm joint angles (7,)."""
        states = p.getJointStates(self.body, ARM_JOINTS, physicsClientId=self.client)
        return np.array([s[0] for s in states])

    def gripper_width(self) -> float:
        """Opening between the fingers in metres (0 closed, 0.08 fully open)."""
        states = p.getJointStates(self.body, FINGER_JOINTS, physicsClientId=self.client)
        return float(states[0][0] + states[1][0])

    def solve_ik(self, position: np.ndarray, orientation: np.ndarray) -> np.ndarray:
        """Arm joint angles (7,) that put the TCP at `position` with quaternion `orientation`."""
        solution = p.calculateInverseKinematics(
            self.body,
            TCP_LINK,
            [float(v) for v in position],
            [float(v) for v in orientation],
            lowerLimits=list(_LOWER),
            upperLimits=list(_UPPER),
            jointRanges=[u - lo for u, lo in zip(_UPPER, _LOWER, strict=True)],
            restPoses=self._rest,
            maxNumIterations=self.config.ik_iterations,
            residualThreshold=self.config.ik_threshold,
            physicsClientId=self.client,
        )
        return np.asarray(solution[:7], dtype=np.float64)

    def command_arm(self, joints: np.ndarray) -> None:
        """Position-control targets for the 7 arm joints."""
        p.setJointMotorControlArray(
            self.body,
            ARM_JOINTS,
            p.POSITION_CONTROL,
            targetPositions=[float(v) for v in joints],
            forces=[self.config.arm_force] * 7,
            positionGains=[self.config.arm_position_gain] * 7,
            physicsClientId=self.client,
        )

    def command_gripper(self, gripper_open: bool) -> None:
        """Position-control both fingers fully open or closed (closing on an object squeezes it)."""
        target = FINGER_OPEN if gripper_open else FINGER_CLOSED
        p.setJointMotorControlArray(
            self.body,
            FINGER_JOINTS,
            p.POSITION_CONTROL,
            targetPositions=[target, target],
            forces=[self.config.finger_force] * 2,
            physicsClientId=self.client,
        )
