"""Mask R-CNN split by stage, each file with its own tests in tests/models/mask_rcnn/.

box_ops (boxes_xyxy IoU, encode/decode, clip) | anchors (generation, IoU labelling,
fixed-size sampling) | nms (greedy, fixed output count) | roi_align (torchvision
semantics, FPN levels) | backbone (ResNet + FPN) | rpn (head, proposals) | targets
(RPN, RoI and mask targets) | heads (box, mask) | postprocess (detections, mask
pasting) | model (the assembled `MaskRCNN`, registered as 'mask_rcnn').
"""
