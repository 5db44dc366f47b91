"""Camera sources without ROS: simulated MuJoCo rig, RealSense, calibration, synchronisation, segmentation."""
