"""Reading X-rays (DICOM, PNG/JPEG, MedMNIST npz), the pixel pipeline to [-1,1], patient-level splits,
and the demo phantom archive. Library code: takes arguments, returns values, knows no params file."""
